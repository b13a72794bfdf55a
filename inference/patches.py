"""Whole-volume prediction with a 3D patch network: overlapping tiles, fixed batches, averaged blending.

Axis convention: the volume is the conformed, normalised image (I, J, K), RAS+ (see
`brainseg_tf.geometry`). A patch is read exactly as the training generator reads one in ``patches``
mode (`brainseg_tf.data.sampling`): ``patch_shape`` over (I, J, K) in that order, no transpose, one
channel last, so the network sees float32 batches (B, D, H, W, 1) with (D, H, W) = (I, J, K) and
returns (B, D, H, W, K). Whatever a patch reaches beyond the predicted box reads as 0, as beyond the
volume in training.

Tiling: the box around the content (voxels above ``background_threshold``, grown by ``margin``) is
cut into patches at stride ``floor(patch * (1 - overlap))`` (at least 1) along each axis; the last
patch of an axis is moved back to end on the box's edge, so patches never leave the box. An axis of
the box shorter than the patch is zero-padded, centred, to the patch size (one patch there).
Blending: every voxel gets the plain mean of the predictions of the patches that cover it (all
patches weigh the same; a softmax output therefore still sums to 1).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from brainseg_tf.config import InferenceConfig
from inference.predict import content_box, fill_background

logger = logging.getLogger(__name__)

PatchPredictFunction = Callable[[np.ndarray], np.ndarray]
"""Maps a float32 batch (B, D, H, W, 1) to probabilities (B, D, H, W, K)."""

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class PatchSpec:
    """How a 3D patch network reads a volume: its bundle's `brainseg_tf.preprocessing.PatchReader` and
    ``pad_multiple``, its output channels, and the overlap and background rule of `InferenceConfig`.

    Attributes:
        patch_shape: patch size over (I, J, K); each a multiple of ``pad_multiple``.
        pad_multiple: spatial sizes the network accepts are multiples of this (2 ** network depth).
        output_channels: channels of the network's output (classes, or 1 for a sigmoid network).
        overlap: fraction of a patch shared with its neighbour along each axis, in [0, 1).
        background_threshold: voxels at or below this normalised intensity count as empty.
        margin: voxels kept around the non-empty box, so the network sees the head's edge.

    Raises:
        ValueError: a field outside its accepted range, named in the message.
    """

    patch_shape: tuple[int, int, int]
    pad_multiple: int
    output_channels: int
    overlap: float = InferenceConfig.patch_overlap
    background_threshold: float = InferenceConfig.background_threshold
    margin: int = InferenceConfig.margin

    def __post_init__(self) -> None:
        if not _is_int(self.pad_multiple) or self.pad_multiple < 1:
            raise ValueError(f"Expected pad_multiple as an int >= 1. Received: pad_multiple={self.pad_multiple!r}")
        shape = self.patch_shape
        if (
            not isinstance(shape, Sequence)
            or len(shape) != 3
            or not all(_is_int(n) and n >= 1 and n % self.pad_multiple == 0 for n in shape)
        ):
            raise ValueError(
                f"Expected patch_shape as 3 positive multiples of pad_multiple={self.pad_multiple}. Received: patch_shape={shape!r}"
            )
        object.__setattr__(self, "patch_shape", tuple(int(n) for n in shape))
        if not _is_int(self.output_channels) or self.output_channels < 1:
            raise ValueError(f"Expected output_channels as an int >= 1. Received: output_channels={self.output_channels!r}")
        if not _is_real(self.overlap) or not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"Expected overlap as a fraction in [0, 1). Received: overlap={self.overlap!r}")
        if not _is_real(self.background_threshold) or math.isnan(self.background_threshold):
            raise ValueError(f"Expected background_threshold as a number. Received: background_threshold={self.background_threshold!r}")
        if not _is_int(self.margin) or self.margin < 0:
            raise ValueError(f"Expected margin as an int >= 0. Received: margin={self.margin!r}")

    @property
    def strides(self) -> tuple[int, int, int]:
        """Step between neighbouring patch corners along each axis: ``floor(patch * (1 - overlap))``, at least 1."""
        return tuple(max(1, int(n * (1.0 - self.overlap))) for n in self.patch_shape)  # type: ignore[return-value]


def predict_patches(
    image: np.ndarray, predict: PatchPredictFunction, spec: PatchSpec, batch_size: int = InferenceConfig.patch_batch_size
) -> np.ndarray:
    """Probabilities for every voxel of a conformed image, float32 (I, J, K, output_channels).

    Only the box around voxels above ``spec.background_threshold`` (plus ``spec.margin``) is
    predicted; everything outside it is certain background: probability 1 for channel 0 of a
    softmax output, 0 for a sigmoid output. Batches always hold ``batch_size`` patches (the last is
    zero-padded), so a compiled function is never traced twice.

    Args:
        image: conformed, normalised image (I, J, K), RAS+.
        predict: float32 (batch_size, *patch_shape, 1) -> (batch_size, *patch_shape, output_channels).
        spec: patch shape, overlap and background rule.
        batch_size: patches per call of ``predict``.

    Raises:
        ValueError: not a 3D image, ``batch_size < 1``, or predictions of an unexpected shape.
    """
    if np.ndim(image) != 3:
        raise ValueError(f"Expected a 3D conformed image. Received: shape={np.shape(image)}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"Expected batch_size as an int >= 1. Received: batch_size={batch_size!r}")
    image = np.asarray(image, dtype=np.float32)
    probabilities = np.empty((*image.shape, spec.output_channels), dtype=np.float32)
    fill_background(probabilities)  # the box is overwritten below
    box = content_box(image, spec.background_threshold, spec.margin)
    if box is None:
        logger.warning("the image holds no voxel above %.2f: every voxel is background", spec.background_threshold)
        return probabilities
    region, crop = _pad_to_patch(image[box], spec.patch_shape)
    starts = [_tile_starts(size, patch, stride) for size, patch, stride in zip(region.shape, spec.patch_shape, spec.strides)]
    corners = list(itertools.product(*starts))
    logger.debug("predicting %d patches of %s over a box of %s", len(corners), spec.patch_shape, region.shape)
    summed = _sum_predictions(region, corners, predict, spec, batch_size)
    counts = [_coverage(size, axis_starts, patch) for size, axis_starts, patch in zip(region.shape, starts, spec.patch_shape)]
    coverage = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    probabilities[box] = (summed / coverage[..., None])[crop]
    return probabilities


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _pad_to_patch(region: np.ndarray, patch_shape: tuple[int, int, int]) -> tuple[np.ndarray, Box]:
    """Zero-pad, centred, each axis shorter than the patch up to it; return the slices that undo it."""
    pads, crop = [], []
    for size, patch in zip(region.shape, patch_shape):
        extra = max(0, patch - size)
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + size))
    return np.pad(region, pads), tuple(crop)  # type: ignore[return-value]


def _tile_starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch corners along one axis of ``size >= patch``: every ``stride``, the last one ending on the edge."""
    return [*range(0, size - patch, stride), size - patch]


def _coverage(size: int, starts: list[int], patch: int) -> np.ndarray:
    """How many patches cover each position along one axis (every position is covered at least once)."""
    counts = np.zeros(size, dtype=np.float32)
    for start in starts:
        counts[start : start + patch] += 1.0
    return counts


def _sum_predictions(
    region: np.ndarray, corners: list[tuple[int, ...]], predict: PatchPredictFunction, spec: PatchSpec, batch_size: int
) -> np.ndarray:
    """Sum of the predictions of every patch over the (padded) box, float32 (*region.shape, channels)."""
    summed = np.zeros((*region.shape, spec.output_channels), dtype=np.float32)
    expected = (batch_size, *spec.patch_shape, spec.output_channels)
    windows = [tuple(slice(c, c + n) for c, n in zip(corner, spec.patch_shape)) for corner in corners]
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch = np.zeros((batch_size, *spec.patch_shape, 1), dtype=np.float32)
        for row, window in enumerate(chunk):
            batch[row, ..., 0] = region[window]
        result = np.asarray(predict(batch))
        if result.shape != expected:
            raise ValueError(f"Expected predictions of shape {expected}. Received: {result.shape}")
        for row, window in enumerate(chunk):
            summed[window] += result[row]
    return summed
