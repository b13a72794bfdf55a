"""Batch norm folded into convolutions: same probabilities, no batch norm left, nothing else touched."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brainseg_tf.config import ModelConfig
from brainseg_tf.models import build_segmenter
from brainseg_tf.models.fold import fold_batch_norm

SMALL = ModelConfig(base_filters=4, depth=2)


def _with_trained_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Non-trivial batch-norm statistics and affine parameters, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 2.0, channels), rng.normal(0, 0.5, channels),
                rng.normal(0, 1.0, channels), rng.uniform(0.2, 3.0, channels),
            ])
    return model


@pytest.mark.parametrize(("family", "input_shape", "classes"), [
    ("multiclass", (None, None, 3), 4),
    ("single_class", (None, None, 3), 4),
    ("multiclass", (None, None, None, 1), 3),
])
def test_folded_network_computes_the_same_probabilities(family, input_shape, classes):
    keras.utils.set_random_seed(1)
    model = _with_trained_statistics(build_segmenter(family, input_shape, classes, SMALL))
    spatial = (16, 24) if len(input_shape) == 3 else (8, 8, 12)
    batch = np.random.default_rng(2).normal(size=(2, *spatial, input_shape[-1])).astype(np.float32)

    folded = fold_batch_norm(model)

    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert norms > 0 and len(folded.trainable_weights) == len(model.trainable_weights) - norms
    expected = np.asarray(model(batch, training=False))
    found = np.asarray(folded(batch, training=False))
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, atol=2e-5)
    assert np.abs(expected - expected.mean()).max() > 1e-2  # a probe that tells the networks apart


def test_a_convolution_feeding_more_than_its_batch_norm_is_left_alone():
    inputs = keras.Input((None, None, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="shared")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(conv)
    model = _with_trained_statistics(keras.Model(inputs, keras.layers.Concatenate()([normed, conv])))

    folded = fold_batch_norm(model)

    assert isinstance(folded.get_layer("bn"), keras.layers.BatchNormalization)
    assert not folded.get_layer("shared").use_bias
    batch = np.random.default_rng(3).normal(size=(1, 8, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(folded(batch)), np.asarray(model(batch)))


def test_a_model_without_batch_norm_comes_back_equal():
    keras.utils.set_random_seed(4)
    model = build_segmenter("multiclass", (None, None, 3), 3, ModelConfig(base_filters=4, depth=2, normalization="none"))
    folded = fold_batch_norm(model)
    batch = np.random.default_rng(5).normal(size=(1, 8, 8, 3)).astype(np.float32)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(np.asarray(folded(batch)), np.asarray(model(batch)))
