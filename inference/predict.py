"""Whole-volume prediction with a 2.5D slice network: stacks, batches, background skipping.

The volume is the conformed, normalised image (RAS+, see `brainseg_tf.geometry`). Stacks are built
exactly as the training generator builds them (`brainseg_tf.data.sampling`): along ``slice_axis``,
``2 * context + 1`` neighbouring slices as channels, lowest slice index first, zeros beyond the
volume's ends; in-plane axes are the two other volume axes in ascending order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

PredictFunction = Callable[[np.ndarray], np.ndarray]
"""Maps a float32 batch (B, H, W, C) to probabilities (B, H, W, K)."""


@dataclass(frozen=True)
class SliceSpec:
    """How a 2.5D network reads a volume (from a bundle's input_spec).

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
    background_threshold: float = 0.05
    margin: int = 8


def predict_volume(image: np.ndarray, predict: PredictFunction, spec: SliceSpec, batch_size: int = 16) -> np.ndarray:
    """Probabilities for every voxel of a conformed image, float32 (I, J, K, output_channels).

    Only the box around voxels above ``spec.background_threshold`` (plus ``spec.margin``) is
    predicted; everything outside it is certain background: probability 1 for channel 0 of a
    softmax output, 0 for a sigmoid output. Batches always hold ``batch_size`` stacks (the last is
    padded), so a compiled function is never traced twice.
    """
    if image.ndim != 3:
        raise ValueError(f"Expected a 3D conformed image. Received: shape={image.shape}")
    probabilities = _background(image.shape, spec.output_channels)
    box = _content_box(image, spec.background_threshold, spec.margin)
    if box is None:
        logger.warning("the image holds no voxel above %.2f: every voxel is background", spec.background_threshold)
        return probabilities
    slabs = np.moveaxis(image[box], spec.slice_axis, 0)
    slabs, crop = _pad_in_plane(slabs, spec.pad_multiple)
    stacks = _stacks(slabs, spec.context)
    predicted = _predict_in_batches(stacks, predict, batch_size, spec.output_channels)[:, crop[0], crop[1]]
    probabilities[box] = np.moveaxis(predicted, 0, spec.slice_axis)
    return probabilities


def _background(shape: tuple[int, ...], channels: int) -> np.ndarray:
    probabilities = np.zeros((*shape, channels), dtype=np.float32)
    if channels > 1:
        probabilities[..., 0] = 1.0
    return probabilities


def _content_box(image: np.ndarray, threshold: float, margin: int) -> tuple[slice, slice, slice] | None:
    """Slices of the smallest box holding every voxel above ``threshold``, grown by ``margin``."""
    content = image > threshold
    if not content.any():
        return None
    box = []
    for axis in range(3):
        present = np.flatnonzero(content.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, present[0] - margin), min(image.shape[axis], present[-1] + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def _pad_in_plane(slabs: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Zero-pad axes 1 and 2 up to a multiple, centred; return the slices that undo it."""
    pads, crop = [(0, 0)], []
    for size in slabs.shape[1:]:
        extra = -size % multiple
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + size))
    return np.pad(slabs, pads), (crop[0], crop[1])


def _stacks(slabs: np.ndarray, context: int) -> np.ndarray:
    """(S, H, W) -> (S, H, W, 2 * context + 1) views: each slice with its neighbours, zeros beyond the ends."""
    padded = np.pad(slabs, [(context, context), (0, 0), (0, 0)])
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * context + 1, axis=0)


def _predict_in_batches(stacks: np.ndarray, predict: PredictFunction, batch_size: int, channels: int) -> np.ndarray:
    count = stacks.shape[0]
    out = np.empty((*stacks.shape[:3], channels), dtype=np.float32)
    for start in range(0, count, batch_size):
        batch = np.ascontiguousarray(stacks[start : start + batch_size], dtype=np.float32)
        filled = batch.shape[0]
        if filled < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - filled, *batch.shape[1:]), np.float32)])
        result = np.asarray(predict(batch))
        if result.shape[:3] != batch.shape[:3] or result.shape[-1] != channels:
            raise ValueError(f"Expected predictions of shape {(*batch.shape[:3], channels)}. Received: {result.shape}")
        out[start : start + filled] = result[:filled]
    return out
