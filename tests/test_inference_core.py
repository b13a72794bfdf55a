"""Whole-volume slice prediction and the threaded argmax, with stand-in networks of known behaviour."""

from __future__ import annotations

import time

import numpy as np
import pytest

from brainseg_tf.config import GeneratorConfig
from brainseg_tf.data.pipeline import SampleSource
from brainseg_tf.datasets.cache import Subject
from brainseg_tf.labels import TISSUE
from inference.argmax import argmax_labels
from inference.predict import SliceSpec, _outside, predict_label_volume, predict_volume


def _threshold_network(channels: int):
    """Softmax-like stand-in: class 1 where the centre channel exceeds 0.5, else class 0."""

    def predict(batch: np.ndarray) -> np.ndarray:
        centre = batch[..., batch.shape[-1] // 2]
        foreground = (centre > 0.5).astype(np.float32)
        if channels == 1:
            return foreground[..., None]
        out = np.zeros((*centre.shape, channels), np.float32)
        out[..., 0], out[..., 1] = 1 - foreground, foreground
        return out

    return predict


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("channels", [1, 4])
def test_predict_volume_covers_every_voxel_on_the_input_shape(slice_axis: int, channels: int) -> None:
    image = np.zeros((20, 26, 18), np.float32)
    image[6:14, 8:20, 5:12] = 0.9  # a bright block in an empty field
    spec = SliceSpec(slice_axis=slice_axis, context=1, pad_multiple=8, output_channels=channels, margin=2)
    probabilities = predict_volume(image, _threshold_network(channels), spec, batch_size=4)
    assert probabilities.shape == (*image.shape, channels) and probabilities.dtype == np.float32
    labels = (probabilities[..., 0] > 0.5) if channels == 1 else argmax_labels(probabilities)
    assert np.array_equal(labels.astype(bool), image > 0.5)


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_concurrent_calls_give_the_probabilities_of_one_call_at_a_time(slice_axis: int) -> None:
    rng = np.random.default_rng(7)
    image = np.zeros((20, 26, 18), np.float32)
    image[3:17, 4:22, 2:16] = rng.random((14, 18, 14), dtype=np.float32)
    spec = SliceSpec(slice_axis=slice_axis, context=1, pad_multiple=8, output_channels=3, margin=1)
    weights = rng.normal(size=(3, 3)).astype(np.float32)

    def mixing(batch: np.ndarray) -> np.ndarray:  # every output voxel depends on its own stack only
        return batch @ weights

    one_at_a_time = predict_volume(image, mixing, spec, batch_size=3, concurrent_calls=1)
    concurrent = predict_volume(image, mixing, spec, batch_size=3, concurrent_calls=3)

    assert np.array_equal(concurrent, one_at_a_time)
    assert np.abs(one_at_a_time[3:17, 4:22, 2:16]).max() > 0.1  # the network's outputs landed


def test_a_failing_call_among_concurrent_ones_raises_and_stops_the_rest() -> None:
    image = np.full((8, 8, 40), 0.9, np.float32)
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=2, margin=0)
    calls: list[int] = []

    def wrong_shape(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.02)
        return np.zeros((*batch.shape[:3], 5), np.float32)

    with pytest.raises(ValueError, match="Expected predictions of shape"):
        predict_volume(image, wrong_shape, spec, batch_size=2, concurrent_calls=2)
    finished = len(calls)
    time.sleep(0.1)
    assert finished == len(calls) < 10  # of 20 batches: those not started by the first error are cancelled


@pytest.mark.parametrize("box", [(slice(2, 5), slice(0, 7), slice(3, 4)), (slice(0, 6), slice(0, 7), slice(0, 8)), (slice(5, 6), slice(1, 2), slice(7, 8))])
def test_regions_outside_the_box_cover_the_rest_once(box) -> None:
    covered = np.zeros((6, 7, 8), int)
    for region in _outside(box, covered.shape):
        covered[region] += 1
    covered[box] += 10
    assert set(np.unique(covered)) <= {1, 10} and (covered[box] == 10).all() and (covered == 1).sum() == covered.size - covered[box].size


@pytest.mark.parametrize("calls", [0, -1, 1.5, True])
def test_predict_volume_refuses_a_bad_number_of_concurrent_calls(calls) -> None:
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=2)
    with pytest.raises(ValueError, match="concurrent_calls"):
        predict_volume(np.zeros((8, 8, 8), np.float32), _threshold_network(2), spec, concurrent_calls=calls)


@pytest.mark.parametrize("workers", [2, 3, 50])
def test_argmax_labels_in_blocks_are_the_argmax(workers: int) -> None:
    probabilities = np.random.default_rng(8).random((9, 7, 5, 4), dtype=np.float32)
    probabilities[0, 0, 0] = 0.5  # a tie: the lower class, as np.argmax

    labels = argmax_labels(probabilities, workers)

    assert labels.dtype == np.uint8
    assert np.array_equal(labels, np.argmax(probabilities, axis=-1))


def test_stacks_are_built_like_the_training_generator() -> None:
    """What inference feeds the network for a slice equals the generator's unaugmented sample there."""
    rng = np.random.default_rng(0)
    image = rng.random((12, 14, 10)).astype(np.float32)
    config = GeneratorConfig(slice_axis=1, context=2, slice_shape=(12, 10), batch_size=1, samples_per_epoch=1)
    subject = Subject("s", image, np.zeros(image.shape, np.uint8), np.eye(4), "train")
    source = SampleSource([subject], TISSUE, config, augment=False)
    seen: list[np.ndarray] = []

    def recorder(batch: np.ndarray) -> np.ndarray:
        seen.extend(batch)
        return np.zeros((*batch.shape[:3], 1), np.float32)

    spec = SliceSpec(slice_axis=1, context=2, pad_multiple=1, output_channels=1, background_threshold=-1.0, margin=0)
    predict_volume(image, recorder, spec, batch_size=5)
    for slice_index in (0, 1, 7, 13):
        expected, _ = source.sampler.extract(0, (6, slice_index, 5))
        assert np.array_equal(seen[slice_index], expected)


def test_empty_image_is_all_background() -> None:
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=3)
    probabilities = predict_volume(np.zeros((8, 8, 8), np.float32), _threshold_network(3), spec)
    assert np.all(probabilities[..., 0] == 1) and np.all(probabilities[..., 1:] == 0)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("calls", [1, 3])
def test_label_volume_is_the_argmax_of_the_probabilities(slice_axis: int, calls: int) -> None:
    rng = np.random.default_rng(5)
    image = np.zeros((20, 26, 18), np.float32)
    image[3:17, 4:22, 2:16] = rng.random((14, 18, 14), dtype=np.float32)
    spec = SliceSpec(slice_axis=slice_axis, context=1, pad_multiple=8, output_channels=4, margin=1)
    weights = rng.normal(size=(3, 4)).astype(np.float32) * 6

    def network(batch: np.ndarray) -> np.ndarray:  # every output voxel depends on its own stack only
        return np.cos(batch @ weights) - np.array([2.0, 0, 0, 0], np.float32)  # class 0 never wins in the box

    def network_labels(batch: np.ndarray) -> np.ndarray:
        return np.argmax(network(batch), axis=-1).astype(np.uint8)

    probabilities = predict_volume(image, network, spec, batch_size=5, concurrent_calls=calls)
    labels = predict_label_volume(image, network_labels, spec, batch_size=5, concurrent_calls=calls)

    assert labels.dtype == np.uint8 and labels.shape == image.shape
    assert np.array_equal(labels, argmax_labels(probabilities))
    assert len(np.unique(labels[3:17, 4:22, 2:16])) >= 3 and np.all(labels[:2] == 0)


def test_label_volume_of_an_empty_image_is_background_without_a_call() -> None:
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=3)

    def never(batch: np.ndarray) -> np.ndarray:
        raise AssertionError("called on an empty image")

    labels = predict_label_volume(np.zeros((8, 8, 8), np.float32), never, spec)
    assert labels.dtype == np.uint8 and not labels.any()


def test_label_volume_refuses_probabilities_in_place_of_labels() -> None:
    image = np.full((8, 8, 12), 0.9, np.float32)
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=3, margin=0)
    with pytest.raises(ValueError, match=r"Expected predictions of shape \(4, 8, 8\)"):
        predict_label_volume(image, _threshold_network(3), spec, batch_size=4)
