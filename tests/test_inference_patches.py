"""Whole-volume 3D patch prediction, with stand-in networks of known behaviour and one tiny real U-Net."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.config import GeneratorConfig
from brainseg_tf.data.sampling import SubjectSampler
from brainseg_tf.datasets.cache import Subject
from inference.argmax import argmax_labels
from inference.patches import PatchSpec, predict_patches


def _threshold_network(channels: int):
    """Stand-in: class 1 where the voxel exceeds 0.5, else class 0 (softmax-like, or one sigmoid channel)."""

    def predict(batch: np.ndarray) -> np.ndarray:
        foreground = (batch[..., 0] > 0.5).astype(np.float32)
        if channels == 1:
            return foreground[..., None]
        out = np.zeros((*foreground.shape, channels), np.float32)
        out[..., 0], out[..., 1] = 1 - foreground, foreground
        return out

    return predict


def _block_image(shape=(20, 26, 18), block=(slice(6, 14), slice(8, 20), slice(5, 12))) -> np.ndarray:
    image = np.zeros(shape, np.float32)
    image[block] = 0.9  # a bright block in an empty field
    return image


def _labels(probabilities: np.ndarray) -> np.ndarray:
    return probabilities[..., 0] > 0.5 if probabilities.shape[-1] == 1 else argmax_labels(probabilities).astype(bool)


@pytest.mark.parametrize("channels", [1, 4])
def test_output_covers_every_voxel_with_background_outside_the_box(channels: int) -> None:
    image = _block_image()
    spec = PatchSpec(patch_shape=(8, 8, 8), pad_multiple=4, output_channels=channels, margin=2)
    probabilities = predict_patches(image, _threshold_network(channels), spec, batch_size=3)
    assert probabilities.shape == (*image.shape, channels) and probabilities.dtype == np.float32
    assert np.array_equal(_labels(probabilities), image > 0.5)
    outside = np.ones(image.shape, bool)
    outside[4:16, 6:22, 3:14] = False  # the block grown by the margin
    expected_background = [1.0] + [0.0] * (channels - 1) if channels > 1 else [0.0]
    assert np.array_equal(probabilities[outside], np.broadcast_to(expected_background, (outside.sum(), channels)))
    if channels > 1:
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("patch_shape", "overlap", "margin"),
    [
        ((8, 8, 8), 0.5, 2),  # box larger than a patch, overlapping tiles
        ((8, 8, 8), 0.0, 2),  # no overlap: the last tile moves back to the box's edge
        ((4, 8, 12), 0.25, 1),  # anisotropic patches, box not a multiple of any of them
        ((16, 16, 16), 0.5, 0),  # box (8, 12, 7) smaller than one patch on every axis: zero-padded
        ((32, 8, 4), 0.75, 3),  # smaller on one axis, larger on the others
    ],
)
def test_a_block_is_recovered_exactly_for_any_tiling(patch_shape, overlap, margin) -> None:
    image = _block_image()
    spec = PatchSpec(patch_shape=patch_shape, pad_multiple=4, output_channels=2, overlap=overlap, margin=margin)
    probabilities = predict_patches(image, _threshold_network(2), spec, batch_size=2)
    assert np.array_equal(argmax_labels(probabilities).astype(bool), image > 0.5)


@pytest.mark.parametrize("patch_shape", [(8, 8, 8), (16, 4, 32)])
def test_identity_network_returns_the_image_inside_the_box(patch_shape) -> None:
    """Every voxel's mean over the patches covering it is put back exactly where it was read."""
    image = np.random.default_rng(0).random((21, 27, 17)).astype(np.float32)
    spec = PatchSpec(patch_shape=patch_shape, pad_multiple=4, output_channels=1, background_threshold=-1.0, margin=0)
    probabilities = predict_patches(image, lambda batch: batch.copy(), spec, batch_size=4)
    np.testing.assert_allclose(probabilities[..., 0], image, rtol=1e-6)


def test_predict_is_always_called_with_the_same_batch_shape() -> None:
    shapes: list[tuple[tuple[int, ...], np.dtype]] = []

    def recorder(batch: np.ndarray) -> np.ndarray:
        shapes.append((batch.shape, batch.dtype))
        return np.zeros((*batch.shape[:4], 3), np.float32)

    spec = PatchSpec(patch_shape=(8, 8, 8), pad_multiple=8, output_channels=3, overlap=0.5, margin=0)
    image = np.ones((16, 12, 9), np.float32)  # corners per axis: 3 x 2 x 2 = 12 patches, 3 batches of 5
    predict_patches(image, recorder, spec, batch_size=5)
    assert len(shapes) == 3
    assert set(shapes) == {((5, 8, 8, 8, 1), np.dtype(np.float32))}


def test_patches_are_read_like_the_training_generator() -> None:
    """What inference feeds the network for a patch equals the generator's unaugmented patch there."""
    rng = np.random.default_rng(0)
    image = rng.random((20, 9, 14)).astype(np.float32)  # axis 1 shorter than the patch: zero-padded, centred
    patch = (8, 12, 8)
    config = GeneratorConfig(mode="patches", patch_shape=patch, batch_size=1, samples_per_epoch=1)
    sampler = SubjectSampler([Subject("s", image, np.zeros(image.shape, np.uint8), np.eye(4), "train")], 3, config)
    seen: list[np.ndarray] = []

    def recorder(batch: np.ndarray) -> np.ndarray:
        seen.extend(batch)
        return np.zeros((*batch.shape[:4], 1), np.float32)

    spec = PatchSpec(patch_shape=patch, pad_multiple=4, output_channels=1, overlap=0.5, background_threshold=-1.0, margin=0)
    predict_patches(image, recorder, spec, batch_size=4)
    starts_i, starts_k, offset_j = [0, 4, 8, 12], [0, 4, 6], (12 - 9) // 2
    corners = [(i, -offset_j, k) for i in starts_i for k in starts_k]  # volume coordinates, C-order like the tiling
    assert len(seen) >= len(corners)
    for corner, patch_seen in zip(corners, seen):
        centre = tuple(c + n // 2 for c, n in zip(corner, patch))
        expected, _ = sampler.extract(0, centre)
        assert np.array_equal(patch_seen, expected), corner


@pytest.mark.parametrize("channels", [1, 3])
def test_an_empty_image_is_background_everywhere_without_calling_the_network(channels: int) -> None:
    def never(batch: np.ndarray) -> np.ndarray:
        raise AssertionError("predict was called on an empty image")

    spec = PatchSpec(patch_shape=(8, 8, 8), pad_multiple=4, output_channels=channels)
    probabilities = predict_patches(np.zeros((10, 12, 9), np.float32), never, spec)
    assert probabilities.shape == (10, 12, 9, channels)
    assert np.all(probabilities[..., 0] == (1.0 if channels > 1 else 0.0))
    assert np.all(probabilities[..., 1:] == 0.0)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"patch_shape": (8, 8)}, "patch_shape"),
        ({"patch_shape": (8, 8, 0)}, "patch_shape"),
        ({"patch_shape": (8, 8, 6)}, "patch_shape"),  # not a multiple of pad_multiple=4
        ({"patch_shape": (8, 8, 8.0)}, "patch_shape"),
        ({"pad_multiple": 0}, "pad_multiple"),
        ({"pad_multiple": True}, "pad_multiple"),
        ({"output_channels": 0}, "output_channels"),
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"overlap": "half"}, "overlap"),
        ({"background_threshold": float("nan")}, "background_threshold"),
        ({"margin": -1}, "margin"),
        ({"margin": 2.5}, "margin"),
    ],
)
def test_bad_specs_raise_naming_the_argument(arguments: dict, name: str) -> None:
    good = {"patch_shape": (8, 8, 8), "pad_multiple": 4, "output_channels": 2}
    with pytest.raises(ValueError, match=name):
        PatchSpec(**{**good, **arguments})


def test_patch_shape_from_json_becomes_a_tuple() -> None:
    spec = PatchSpec(patch_shape=[16, 8, 8], pad_multiple=8, output_channels=1)  # type: ignore[arg-type]
    assert spec.patch_shape == (16, 8, 8) and spec.strides == (8, 4, 4)
    assert hash(spec) == hash(PatchSpec((16, 8, 8), 8, 1))


@pytest.mark.parametrize(
    ("image", "batch_size", "predict", "name"),
    [
        (np.zeros((8, 8), np.float32), 2, None, "3D"),
        (np.ones((8, 8, 8), np.float32), 0, None, "batch_size"),
        (np.ones((8, 8, 8), np.float32), 2, lambda batch: batch[..., :2, 0], "predictions"),
    ],
)
def test_bad_calls_raise(image, batch_size, predict, name) -> None:
    spec = PatchSpec(patch_shape=(8, 8, 8), pad_multiple=4, output_channels=1)
    with pytest.raises(ValueError, match=name):
        predict_patches(image, predict or _threshold_network(1), spec, batch_size=batch_size)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_a_tiny_3d_unet_fits_the_patches() -> None:
    """A real patch-mode network (one channel, patch_shape, depth 2) takes the batches predict_patches builds."""
    keras = pytest.importorskip("keras")
    from brainseg_tf.config import ModelConfig
    from brainseg_tf.models import build_segmenter

    keras.utils.set_random_seed(0)
    depth, patch = 2, (16, 16, 16)
    model = build_segmenter("multiclass", (*patch, 1), 3, ModelConfig(base_filters=4, depth=depth))
    calls: list[tuple[int, ...]] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return np.asarray(model(batch, training=False))

    image = _block_image(shape=(22, 28, 12))
    spec = PatchSpec(patch_shape=patch, pad_multiple=2**depth, output_channels=3)  # box 22 x 28 x 12: 2 x 3 x 1 patches
    probabilities = predict_patches(image, predict, spec, batch_size=2)
    assert probabilities.shape == (22, 28, 12, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    assert set(calls) == {(2, *patch, 1)}
