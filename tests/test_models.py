"""Both model families on tiny inputs: shapes, losses, Dice metric, saving, a few training steps."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brainseg_tf.config import ModelConfig
from brainseg_tf.errors import ConfigError
from brainseg_tf.models import (
    DiceBinaryCrossEntropy,
    DiceCrossEntropy,
    DiceScore,
    build_backbone,
    build_segmenter,
    compile_segmenter,
    count_flops,
    padded_shape,
)

# TF variables under numpy 2 warn whenever Keras copies weights to numpy (upstream, harmless).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

TINY = ModelConfig(base_filters=4, depth=2)
NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _one_hot(classes: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[classes]


# --- networks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "input_shape", "channels"),
    [
        ("multiclass", (32, 32, 3), NUM_CLASSES),
        ("single_class", (32, 32, 3), 1),
        ("multiclass", (16, 16, 16, 1), NUM_CLASSES),
        ("single_class", (16, 16, 16, 1), 1),
    ],
)
def test_segmenter_outputs_probabilities(family, input_shape, channels):
    model = build_segmenter(family, input_shape, NUM_CLASSES, TINY)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    y = model.predict(x, verbose=0)
    assert model.output.dtype == "float32"
    assert y.shape == (2, *input_shape[:-1], channels)
    if family == "multiclass":
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    else:
        assert np.all((y > 0) & (y < 1))


def test_backbone_is_shared_and_fully_convolutional():
    multi = build_segmenter("multiclass", (None, None, 3), NUM_CLASSES, TINY)
    single = build_segmenter("single_class", (None, None, 3), NUM_CLASSES, TINY)
    backbone = build_backbone((None, None, 3), TINY)
    body = [layer.name for layer in backbone.layers]
    assert [layer.name for layer in multi.layers][: len(body)] == body
    assert [layer.name for layer in single.layers][: len(body)] == body
    assert multi.count_params() - single.count_params() == (NUM_CLASSES - 1) * (TINY.base_filters + 1)
    assert multi.predict(np.zeros((1, 48, 64, 3), "float32"), verbose=0).shape == (1, 48, 64, NUM_CLASSES)


def test_layer_options_follow_config():
    config = ModelConfig(base_filters=4, depth=2, convs_per_level=3, normalization="none", dropout=0.3, upsampling="resize")
    model = build_segmenter("multiclass", (32, 32, 3), NUM_CLASSES, config)
    names = {layer.name for layer in model.layers}
    assert {"enc0_conv3", "bottleneck_dropout", "dec0_upsample"} <= names
    assert not any("_bn" in name for name in names)
    assert model.get_layer("bottleneck_conv1").filters == 16


def test_final_activation_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_segmenter("multiclass", (32, 32, 3), NUM_CLASSES, TINY)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("head_conv").compute_dtype == "float16"
    assert model.output.dtype == "float32"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_shape": (30, 32, 3)}, ValueError, r"multiple of 2\*\*depth=4.*Received: input_shape=\(30, 32, 3\)"),
        ({"input_shape": (8, 16, 16, 1), "config": ModelConfig(base_filters=4, depth=4)}, ValueError, "2\\*\\*depth=16"),
        ({"input_shape": (32, 32)}, ValueError, "Expected input_shape"),
        ({"input_shape": (32, 32, None)}, ValueError, "channel count"),
        ({"family": "ensemble"}, ValueError, "Received: family='ensemble'"),
        ({"num_classes": 1}, ValueError, "num_classes=1"),
        ({"config": ModelConfig(depth=0)}, ConfigError, "depth=0"),
        ({"config": ModelConfig(normalization="group")}, ConfigError, "normalization='group'"),
        ({"config": ModelConfig(upsampling="bilinear")}, ConfigError, "upsampling='bilinear'"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    arguments = {"family": "multiclass", "input_shape": (32, 32, 3), "num_classes": NUM_CLASSES, "config": TINY}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        build_segmenter(**arguments)


def test_padded_shape():
    assert padded_shape((197, 233), 4) == (208, 240)
    assert padded_shape((32, 33, 1), 2) == (32, 36, 4)


def test_count_flops_matches_hand_count():
    config = ModelConfig(base_filters=2, depth=1, convs_per_level=1, normalization="none")
    model = build_segmenter("multiclass", (None, None, 1), 3, config)
    # enc0 3x3 1->2 on 4x4, bottleneck 3x3 2->4 on 2x2, transposed 2x2 4->2 from 2x2,
    # dec0 3x3 (2+2)->2 on 4x4, head 1x1 2->3 on 4x4
    macs = 16 * 9 * 1 * 2 + 4 * 9 * 2 * 4 + 4 * 4 * 4 * 2 + 16 * 9 * 4 * 2 + 16 * 1 * 2 * 3
    assert count_flops(model, (4, 4, 1)) == 2 * macs
    assert count_flops(model, (8, 8, 1)) == 4 * 2 * macs
    with pytest.raises(ValueError, match="static input_shape"):
        count_flops(model)


# --- losses ---------------------------------------------------------------------------------------


def _classes(shape=(2, 8, 8)) -> np.ndarray:
    return np.random.default_rng(1).integers(0, NUM_CLASSES, size=shape)


def test_dice_crossentropy_orders_predictions():
    target = _one_hot(_classes())
    noisy = 0.6 * target + 0.4 / NUM_CLASSES
    wrong = _one_hot((_classes() + 1) % NUM_CLASSES)
    dice_only = DiceCrossEntropy(dice_weight=1.0, crossentropy_weight=0.0)
    loss = DiceCrossEntropy()
    assert float(dice_only(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-4)
    assert float(loss(target, target)) < float(loss(target, noisy)) < float(loss(target, wrong))
    # integer class maps (N, H, W, 1) are accepted as targets
    sparse = _classes()[..., None].astype("float32")
    assert float(loss(sparse, noisy)) == pytest.approx(float(loss(target, noisy)), rel=1e-6)


def test_dice_crossentropy_excludes_background_by_default():
    target = _one_hot(np.zeros((1, 4, 4), int), 2)  # all background
    prediction = np.full_like(target, 0.5)
    with_bg = DiceCrossEntropy(crossentropy_weight=0.0, include_background=True)
    without_bg = DiceCrossEntropy(crossentropy_weight=0.0)
    # foreground: 0 overlap, 8 predicted -> Dice ~0; background: 2*8/(8+16) = 2/3
    assert float(without_bg(target, prediction)) == pytest.approx(1.0, abs=1e-5)
    assert float(with_bg(target, prediction)) == pytest.approx(1.0 - (0.0 + 2 / 3) / 2, abs=1e-5)


def test_dice_binary_crossentropy_orders_predictions_and_balances():
    target = (np.random.default_rng(2).random((2, 8, 8, 1)) < 0.2).astype("float32")
    loss = DiceBinaryCrossEntropy()
    assert float(DiceBinaryCrossEntropy(crossentropy_weight=0.0)(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(target, 0.7 * target + 0.15)) < float(loss(target, 0.3 * target + 0.35)) < float(loss(target, 1 - target))
    # balanced weight w = (1 - f) / f on positives, weighted mean over voxels
    prediction = np.full_like(target, 0.3)
    f = target.mean()
    w = np.where(target > 0, (1 - f) / f, 1.0)
    bce = -(target * np.log(0.3) + (1 - target) * np.log(0.7))
    bce_only = DiceBinaryCrossEntropy(dice_weight=0.0)
    assert float(bce_only(target, prediction)) == pytest.approx((w * bce).sum() / w.sum(), rel=1e-5)
    fixed = DiceBinaryCrossEntropy(dice_weight=0.0, positive_weight=1.0)
    assert float(fixed(target, prediction)) == pytest.approx(bce.mean(), rel=1e-5)
    assert float(fixed(target[..., 0], prediction)) == pytest.approx(bce.mean(), rel=1e-5)


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (DiceCrossEntropy, {"dice_weight": -1.0}),
        (DiceCrossEntropy, {"dice_weight": 0.0, "crossentropy_weight": 0.0}),
        (DiceBinaryCrossEntropy, {"positive_weight": 0.0}),
        (DiceScore, {"class_index": -1}),
        (DiceScore, {"threshold": 1.5}),
    ],
)
def test_bad_loss_and_metric_arguments_raise(factory, kwargs):
    with pytest.raises(ValueError, match="Expected"):
        factory(**kwargs)


# --- metric ---------------------------------------------------------------------------------------


def _numpy_dice(predicted: np.ndarray, target: np.ndarray) -> float:
    return 2 * np.logical_and(predicted, target).sum() / (predicted.sum() + target.sum())


def test_dice_score_softmax_accumulates_over_batches():
    rng = np.random.default_rng(3)
    truth = [rng.integers(0, 3, size=(2, 4, 4)) for _ in range(2)]
    logits = [rng.normal(size=(2, 4, 4, 3)) for _ in range(2)]
    probabilities = [np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in logits]
    metric = DiceScore(class_index=2, name="dice_wm")
    for t, p in zip(truth, probabilities):
        metric.update_state(_one_hot(t, 3), p.astype("float32"))
    predicted = np.concatenate([p.argmax(-1) for p in probabilities]) == 2
    expected = _numpy_dice(predicted, np.concatenate(truth) == 2)
    assert metric.name == "dice_wm"
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    metric.reset_state()
    metric.update_state(truth[0][..., None].astype("float32"), probabilities[0].astype("float32"))  # sparse targets
    assert float(metric.result()) == pytest.approx(_numpy_dice(probabilities[0].argmax(-1) == 2, truth[0] == 2), rel=1e-6)


def test_dice_score_sigmoid_hand_example():
    target = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], "float32").reshape(1, 2, 4, 1)
    prediction = np.array([[0.9, 0.4, 0.6, 0.1], [0.8, 0.2, 0.3, 0.5]], "float32").reshape(1, 2, 4, 1)
    # predicted > 0.5: (0,0), (0,2), (1,0) -> 3; target 3; overlap (0,0), (1,0) -> 2; Dice = 4/6
    metric = DiceScore(class_index=0)
    metric.update_state(target, prediction)
    assert float(metric.result()) == pytest.approx(4 / 6)
    empty = DiceScore(class_index=0)
    empty.update_state(np.zeros_like(target), np.zeros_like(prediction))
    assert float(empty.result()) == 1.0
    with pytest.raises(ValueError, match="class_index=1"):
        DiceScore(class_index=1).update_state(target, prediction)


# --- compile, save, train -------------------------------------------------------------------------


def _toy_batch(family: str, n: int = 4, size: int = 32):
    """Labels that the input determines: class = quantile bin of channel 1 (the centre slice)."""
    x = np.random.default_rng(4).normal(size=(n, size, size, 3)).astype("float32")
    classes = np.digitize(x[..., 1], [-0.7, 0.0, 0.7])
    if family == "multiclass":
        return x, _one_hot(classes)
    return x, (classes == 2).astype("float32")[..., None]


@pytest.mark.parametrize("family", ["multiclass", "single_class"])
def test_training_steps_reduce_loss(family):
    model = build_segmenter(family, (32, 32, 3), NUM_CLASSES, TINY)
    names = ["background", "CSF", "gray matter", "white matter"] if family == "multiclass" else ["gray matter"]
    compile_segmenter(model, family, TINY, learning_rate=1e-2, class_names=names)
    x, y = _toy_batch(family)
    logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(8)]
    assert logs[-1]["loss"] < logs[0]["loss"]
    expected = {"dice_csf", "dice_gray_matter", "dice_white_matter"} if family == "multiclass" else {"dice_gray_matter"}
    assert set(logs[-1]) == {"loss"} | expected


def test_compile_rejects_mismatched_family():
    model = build_segmenter("single_class", (32, 32, 3), NUM_CLASSES, TINY)
    with pytest.raises(ValueError, match="more than 1 output channel"):
        compile_segmenter(model, "multiclass", TINY)
    with pytest.raises(ValueError, match="class_names"):
        compile_segmenter(model, "single_class", TINY, class_names=["gm", "wm"])


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # saved before any step
@pytest.mark.parametrize("family", ["multiclass", "single_class"])
def test_saved_model_loads_without_custom_objects(tmp_path, family):
    config = ModelConfig(base_filters=4, depth=2, positive_weight=3.0)
    model = compile_segmenter(build_segmenter(family, (None, None, 3), NUM_CLASSES, config), family, config)
    rng = np.random.default_rng(5)  # perturb every weight, batch-norm statistics included (variances stay > 0)
    model.set_weights([w + np.abs(rng.normal(scale=0.1, size=w.shape)).astype(w.dtype) for w in model.get_weights()])
    path = tmp_path / f"{family}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x, _ = _toy_batch(family)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    expected_loss = DiceCrossEntropy if family == "multiclass" else DiceBinaryCrossEntropy
    assert isinstance(loaded.loss, expected_loss)
    assert loaded.loss.get_config() == model.loss.get_config()


@pytest.mark.parametrize(
    "obj", [DiceScore(2, threshold=0.4, name="dice_wm"), DiceCrossEntropy(0.5, 2.0), DiceBinaryCrossEntropy(positive_weight=None)]
)
def test_registered_objects_round_trip(obj):
    serialized = keras.saving.serialize_keras_object(obj)
    assert serialized["registered_name"] == f"brainseg_tf>{type(obj).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(restored) is type(obj) and restored.get_config() == obj.get_config()
