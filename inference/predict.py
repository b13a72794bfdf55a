"""Whole-volume prediction with a 2.5D slice network: stacks, batches, background skipping.

The volume is the conformed, normalised image (RAS+, see `brainseg_tf.geometry`). Stacks are cut
with the training generator's crop (`brainseg_tf.crops.crop_at`, zeros outside what is read) in
its layout (`brainseg_tf.data.sampling`): along ``slice_axis``, ``2 * context + 1`` neighbouring
slices as channels, lowest slice index first; in-plane axes are the two other volume axes in
ascending order. Only the box around the content is read: context beyond its ends reads as zeros.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from brainseg_tf.config import InferenceConfig
from brainseg_tf.crops import crop_at
from inference.threads import run_tasks

logger = logging.getLogger(__name__)

PredictFunction = Callable[[np.ndarray], np.ndarray]
"""Maps a float32 batch (B, H, W, C) to probabilities (B, H, W, K), or to class indices (B, H, W)."""


@dataclass(frozen=True)
class SliceSpec:
    """How a 2.5D network reads a volume: its bundle's `brainseg_tf.preprocessing.SliceReader` and
    ``pad_multiple``, its output channels, and the background rule of `InferenceConfig`.

    Attributes:
        slice_axis: volume axis the slices are taken along.
        context: neighbouring slices on each side.
        pad_multiple: in-plane sizes are padded to a multiple of this (2 ** network depth).
        output_channels: channels of the network's output (classes, or 1 for a sigmoid network).
        background_threshold: voxels at or below this normalised intensity count as empty.
        margin: voxels kept around the non-empty box, so the network sees the head's edge.
    """

    slice_axis: int
    context: int
    pad_multiple: int
    output_channels: int
    background_threshold: float = InferenceConfig.background_threshold
    margin: int = InferenceConfig.margin


@dataclass(frozen=True)
class PredictionPlan:
    """What `predict_volume` computes for one image: the box, the stacks, their shape, the batches.

    Attributes:
        image_shape: shape of the conformed image (I, J, K).
        box: the predicted box (content above the threshold, grown by the margin); None when empty.
        slice_axis: volume axis the stacks are taken along.
        slices: stacks that cover the box (one per slice of the box along ``slice_axis``).
        in_plane_shape: the box's two in-plane sizes (ascending volume axes), before padding.
        padding: zeros added (before, after) to each in-plane axis, up to a multiple of ``pad_multiple``.
        channels: channels of one stack (``2 * context + 1``).
        batch_size: stacks in every call of the predict function: the largest allowed, lowered so the
            stacks spread evenly over the batches (the last is filled up with fewer than ``batches``
            zero stacks).
        batches: calls of the predict function.
    """

    image_shape: tuple[int, int, int]
    box: tuple[slice, slice, slice] | None
    slice_axis: int
    slices: int
    in_plane_shape: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    channels: int
    batch_size: int
    batches: int

    @property
    def stack_shape(self) -> tuple[int, int, int]:
        """One network input (H, W, C), padded: what the network is costed at."""
        (h0, h1), (w0, w1) = self.padding
        return (self.in_plane_shape[0] + h0 + h1, self.in_plane_shape[1] + w0 + w1, self.channels)

    @property
    def stacks_run(self) -> int:
        """Stacks the network computes, zero stacks of the last batch included."""
        return self.batches * self.batch_size


def plan_prediction(image: np.ndarray, spec: SliceSpec, batch_size: int = InferenceConfig.batch_size) -> PredictionPlan:
    """The plan `predict_volume` follows for ``image`` (it calls this function itself).

    Args:
        image: conformed, normalised image (I, J, K), RAS+.
        spec: slice axis, context, padding and background rule.
        batch_size: the most stacks in one call of the predict function.

    Raises:
        ValueError: not a 3D image, or ``batch_size < 1``.
    """
    if np.ndim(image) != 3:
        raise ValueError(f"Expected a 3D conformed image. Received: shape={np.shape(image)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Expected batch_size as an int >= 1. Received: batch_size={batch_size!r}")
    shape = tuple(int(s) for s in np.shape(image))
    box = content_box(image, spec.background_threshold, spec.margin)
    in_plane_axes = [axis for axis in range(3) if axis != spec.slice_axis]
    if box is None:
        slices, in_plane = 0, (0, 0)
    else:
        slices = box[spec.slice_axis].stop - box[spec.slice_axis].start
        in_plane = tuple(box[axis].stop - box[axis].start for axis in in_plane_axes)
    padding = tuple(_centred_padding(size, spec.pad_multiple) for size in in_plane)
    batches = -(-slices // batch_size)
    per_batch = -(-slices // batches) if batches else int(batch_size)
    return PredictionPlan(shape, box, spec.slice_axis, slices, in_plane, padding, 2 * spec.context + 1, per_batch, batches)  # type: ignore[arg-type]


def predict_volume(
    image: np.ndarray, predict: PredictFunction, spec: SliceSpec, batch_size: int = InferenceConfig.batch_size, concurrent_calls: int = 1
) -> np.ndarray:
    """Probabilities for every voxel of a conformed image, float32 (I, J, K, output_channels).

    Only the box around voxels above ``spec.background_threshold`` (plus ``spec.margin``) is
    predicted; everything outside it is certain background: probability 1 for channel 0 of a
    softmax output, 0 for a sigmoid output. Every batch of one volume holds the same number of
    stacks, at most ``batch_size``: the stacks spread evenly over ``ceil(slices / batch_size)``
    batches and the last is filled up with zero stacks (fewer than there are batches), so a compiled
    function sees one shape per volume. `plan_prediction` tells in advance what is computed.

    Args:
        image: conformed, normalised image (I, J, K), RAS+.
        predict: the network; called from ``concurrent_calls`` threads at once when above 1 (it
            must be thread-safe, as TensorFlow functions are).
        spec: slice axis, context, padding and background rule.
        batch_size: the most stacks in one call of ``predict``.
        concurrent_calls: tasks in flight at once: batches, and the filling of the certain
            background. Calls overlap one another's batch building and result storing; on 2 cores,
            3 ran fastest (docs/benchmarks.md).

    Raises:
        ValueError: ``concurrent_calls < 1``, or ``predict`` returns an unexpected shape.
    """
    _check_concurrent_calls(concurrent_calls)
    plan = plan_prediction(image, spec, batch_size)
    probabilities = np.empty((*plan.image_shape, spec.output_channels), dtype=np.float32)
    if plan.box is None:
        _warn_empty(spec)
        fill_background(probabilities)
        return probabilities
    box = plan.box

    def fill_outside_box() -> None:
        for region in _outside(box, plan.image_shape):
            fill_background(probabilities, region)

    _run_batches(image, predict, spec, plan, probabilities, concurrent_calls, [fill_outside_box])
    return probabilities


def predict_label_volume(
    image: np.ndarray, predict_labels: PredictFunction, spec: SliceSpec, batch_size: int = InferenceConfig.batch_size, concurrent_calls: int = 1
) -> np.ndarray:
    """Class indices for every voxel of a conformed image, uint8 (I, J, K), from a multi-class network.

    The same plan, batches and background rule as `predict_volume`, for a function that returns the
    argmax over its classes, (B, H, W) uint8, instead of the probabilities: the voxels outside the
    predicted box are class 0. The labels equal the argmax of `predict_volume`'s probabilities when
    ``predict_labels`` is that argmax (`brainseg_tf.bundle.ServingFunction.labels` takes it inside
    TensorFlow: the probabilities, a float per class and voxel, are never copied out).

    Raises:
        ValueError: ``concurrent_calls < 1``, or ``predict_labels`` returns an unexpected shape.
    """
    _check_concurrent_calls(concurrent_calls)
    plan = plan_prediction(image, spec, batch_size)
    labels = np.zeros(plan.image_shape, dtype=np.uint8)  # background outside the box
    if plan.box is None:
        _warn_empty(spec)
        return labels
    _run_batches(image, predict_labels, spec, plan, labels, concurrent_calls, [])
    return labels


def _run_batches(
    image: np.ndarray,
    predict: PredictFunction,
    spec: SliceSpec,
    plan: PredictionPlan,
    out: np.ndarray,
    concurrent_calls: int,
    other_tasks: list[Callable[[], None]],
) -> None:
    """Every batch of ``plan`` through ``predict``, each result cropped into ``out``'s box (I, J, K, ...);
    ``other_tasks`` run first, alongside the first batches."""
    logger.debug("predicting %d stacks of %s in %d batches of %d", plan.slices, plan.stack_shape, plan.batches, plan.batch_size)
    box: tuple[slice, slice, slice] = plan.box  # type: ignore[assignment]  (callers handle an empty image)
    slabs = np.moveaxis(image[box], spec.slice_axis, 0)  # (S, H, W), a view
    box_view = np.moveaxis(out[box], spec.slice_axis, 0)  # (S, H, W, ...), a view into out
    crop = tuple(slice(before, before + size) for (before, _), size in zip(plan.padding, plan.in_plane_shape))

    def run(start: int) -> None:
        batch = _batch(slabs, start, plan, spec.context)
        result = np.asarray(predict(batch))
        expected = (*batch.shape[:3], *out.shape[3:])
        if result.shape != expected:
            raise ValueError(f"Expected predictions of shape {expected}. Received: {result.shape}")
        stop = min(start + plan.batch_size, plan.slices)
        box_view[start:stop] = result[: stop - start, crop[0], crop[1]]

    batches = [functools.partial(run, start) for start in range(0, plan.slices, plan.batch_size)]
    run_tasks([*other_tasks, *batches], concurrent_calls)


def _check_concurrent_calls(concurrent_calls: int) -> None:
    if isinstance(concurrent_calls, bool) or not isinstance(concurrent_calls, (int, np.integer)) or concurrent_calls < 1:
        raise ValueError(f"Expected concurrent_calls as an int >= 1. Received: concurrent_calls={concurrent_calls!r}")


def _warn_empty(spec: SliceSpec) -> None:
    logger.warning("the image holds no voxel above %.2f: every voxel is background", spec.background_threshold)


def fill_background(probabilities: np.ndarray, region: tuple[slice, ...] = (slice(None),) * 3) -> None:
    """Certain background in ``region`` of (I, J, K, channels) scores (all of it by default):
    probability 1 for channel 0 of a softmax output, 0 elsewhere."""
    probabilities[region] = 0.0
    if probabilities.shape[-1] > 1:
        probabilities[(*region, 0)] = 1.0


def _outside(box: tuple[slice, slice, slice], shape: tuple[int, int, int]) -> list[tuple[slice, slice, slice]]:
    """Disjoint regions that together cover every voxel of ``shape`` outside ``box`` (at most six slabs)."""
    regions = []
    for axis in range(3):
        rest = tuple(slice(None) for _ in range(axis + 1, 3))
        for part in (slice(0, box[axis].start), slice(box[axis].stop, shape[axis])):
            if part.stop > part.start:
                regions.append((*box[:axis], part, *rest))
    return regions


def content_box(image: np.ndarray, threshold: float, margin: int) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every voxel above ``threshold``, grown by ``margin`` and
    clipped to the image; None when no voxel is above it."""
    content = np.asarray(image) > threshold
    if not content.any():
        return None
    box = []
    for axis in range(3):
        present = np.flatnonzero(content.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(present[0]) - margin), min(content.shape[axis], int(present[-1]) + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def _centred_padding(size: int, multiple: int) -> tuple[int, int]:
    """Zeros (before, after) that bring ``size`` up to a multiple of ``multiple``, centred."""
    extra = -size % multiple
    return (extra // 2, extra - extra // 2)


def _batch(slabs: np.ndarray, start: int, plan: PredictionPlan, context: int) -> np.ndarray:
    """Stacks ``start`` to ``start + plan.batch_size`` of ``slabs`` (S, H, W) as one contiguous float32 batch
    (B, H', W', 2 * context + 1): one zero-padded crop of the slabs they read (context and in-plane
    padding included), seen through a sliding window. Stacks past the last slab hold only what the
    crop reaches (their predictions are dropped)."""
    (h0, _), (w0, _) = plan.padding
    height, width, _ = plan.stack_shape
    window = crop_at(slabs, (start - context, -h0, -w0), (plan.batch_size + 2 * context, height, width))
    stacks = np.lib.stride_tricks.sliding_window_view(window, 2 * context + 1, axis=0)
    return np.ascontiguousarray(stacks, dtype=np.float32)
