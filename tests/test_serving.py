"""The served network: the trained model's function, with its softmax head in a faster form."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from brainseg_tf.config import ModelConfig
from brainseg_tf.models import build_segmenter
from brainseg_tf.models.serving import channel_softmax, serving_functions, serving_network

SMALL = ModelConfig(base_filters=4, depth=2)


@pytest.mark.parametrize("shape", [(2, 5, 7, 4), (1, 3, 4, 5, 3), (2, 9, 2)])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_channel_softmax_equals_the_softmax_over_channels(shape, scale):
    logits = (np.random.default_rng(0).normal(size=shape) * scale).astype(np.float32)  # 300: exp would overflow unshifted

    found = channel_softmax(tf.constant(logits)).numpy()

    np.testing.assert_allclose(found, tf.nn.softmax(logits, axis=-1).numpy(), atol=1e-6)
    assert np.isfinite(found).all()


@pytest.mark.parametrize(("family", "input_shape", "classes"), [
    ("multiclass", (None, None, 3), 4),
    ("single_class", (None, None, 3), 4),
    ("multiclass", (None, None, None, 1), 3),
])
def test_served_network_computes_the_models_probabilities(family, input_shape, classes):
    keras.utils.set_random_seed(3)
    model = build_segmenter(family, input_shape, classes, SMALL)
    spatial = (16, 24) if len(input_shape) == 3 else (8, 8, 12)
    batch = np.random.default_rng(4).normal(size=(2, *spatial, input_shape[-1])).astype(np.float32) * 3

    found = np.asarray(serving_network(model)(tf.constant(batch)))

    expected = np.asarray(model(batch, training=False))
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, atol=2e-5)
    assert np.abs(expected - expected.mean()).max() > 1e-2  # a probe that tells the networks apart


@pytest.mark.parametrize(("family", "input_shape"), [("multiclass", (None, None, 3)), ("multiclass", (None, None, None, 1))])
def test_served_labels_are_the_class_of_highest_probability(family, input_shape):
    keras.utils.set_random_seed(5)
    model = build_segmenter(family, input_shape, 4, SMALL)
    spatial = (16, 24) if len(input_shape) == 3 else (8, 8, 12)
    batch = np.random.default_rng(6).normal(size=(2, *spatial, input_shape[-1])).astype(np.float32) * 3

    _, labels_function = serving_functions(model)
    labels = labels_function(tf.constant(batch)).numpy()

    probabilities = np.asarray(model(batch, training=False))
    assert labels.dtype == np.uint8 and labels.shape == probabilities.shape[:-1]
    chosen = np.take_along_axis(probabilities, labels[..., None].astype(np.intp), axis=-1)[..., 0]
    np.testing.assert_allclose(chosen, probabilities.max(axis=-1), atol=1e-6)
    assert len(np.unique(labels)) > 1


def test_a_sigmoid_network_has_no_labels_function():
    model = build_segmenter("single_class", (None, None, 3), 4, SMALL)
    assert serving_functions(model)[1] is None


def test_a_softmax_over_another_axis_is_served_as_it_is():
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, keras.layers.Softmax(axis=1)(keras.layers.Dense(4)(inputs)))
    batch = np.random.default_rng(5).normal(size=(2, 6, 4)).astype(np.float32)

    found = np.asarray(serving_network(model)(tf.constant(batch)))

    np.testing.assert_allclose(found, np.asarray(model(batch)), atol=1e-6)
    np.testing.assert_allclose(found.sum(axis=1), 1.0, atol=1e-5)
