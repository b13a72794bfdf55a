"""Robust intensity normalisation: percentile clipping, then scaling to [0, 1]."""

from __future__ import annotations

import numpy as np

SCALING_BLOCK = 1 << 16
"""Voxels scaled at a time: each block's float64 working copy stays in the CPU cache."""


def normalize_intensity(image: np.ndarray, lower_percentile: float = 0.5, upper_percentile: float = 99.5) -> np.ndarray:
    """Clip to percentiles of the foreground voxels, then scale to [0, 1] (float32).

    The foreground is the voxels above the image's own ``lower_percentile`` (the head, not
    the air around it), so that neither the amount of background nor a few voxels colder
    than the air move the percentiles. With ``lower_percentile=0`` that floor is the minimum.

    The result keeps the memory order of a Fortran-ordered image (as nibabel reads NIfTI);
    any other image gives a C-ordered result. The values do not depend on the order.

    Raises:
        ValueError: percentiles out of order, an empty image, NaN or infinite voxels,
            or an image without contrast.
    """
    if not 0 <= lower_percentile < upper_percentile <= 100:
        raise ValueError(
            f"Expected 0 <= lower_percentile < upper_percentile <= 100. "
            f"Received: lower_percentile={lower_percentile}, upper_percentile={upper_percentile}"
        )
    image = _finite_image(image)
    order = "F" if image.flags.f_contiguous and not image.flags.c_contiguous else "C"
    voxels = np.asarray(image, order=order).ravel(order=order)  # memory order: a view, no copy
    low, high = _window(voxels, lower_percentile, upper_percentile)
    normalised = np.empty(image.shape, dtype=np.float32, order=order)
    _scale(voxels, normalised.ravel(order=order), low, high)
    return normalised


def _window(voxels: np.ndarray, lower_percentile: float, upper_percentile: float) -> tuple[float, float]:
    """The (low, high) intensities that map to 0 and 1: percentiles of the foreground of ``voxels`` (1D)."""
    floor = _low_percentile(voxels, lower_percentile)
    foreground = voxels[voxels > floor]
    if foreground.size == 0:
        raise ValueError("Expected an image with contrast. Received: a constant image")
    low, high = np.percentile(foreground, [lower_percentile, upper_percentile])
    if high <= low:
        return float(floor), float(foreground.max())
    return float(low), float(high)


def _scale(voxels: np.ndarray, out: np.ndarray, low: float, high: float) -> None:
    """``out = clip((clip(voxels, low, high) - low) / (high - low), 0, 1)``, computed in float64 block by block."""
    for start in range(0, voxels.size, SCALING_BLOCK):
        block = voxels[start : start + SCALING_BLOCK].astype(np.float64)
        np.clip(block, low, high, out=block)
        block -= low
        block /= high - low
        np.clip(block, 0.0, 1.0, out=block)
        out[start : start + SCALING_BLOCK] = block


def _low_percentile(image: np.ndarray, percentile: float) -> np.floating:
    """``np.percentile(image, percentile)``, without sorting when the image's minimum fills that rank.

    Most heads sit in a field of one background value: then both order statistics the percentile
    interpolates between are the minimum, and so is the percentile.
    """
    minimum = image.min()
    rank = int((image.size - 1) * percentile / 100) + 1  # the upper of the two order statistics used
    if np.count_nonzero(image == minimum) > rank + 1:  # one more for rounding of the rank
        return minimum
    return np.percentile(image, percentile)


def _finite_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.size == 0:
        raise ValueError("Expected an image with voxels. Received: an empty array")
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise ValueError(f"Expected finite intensities. Received: {bad} NaN or infinite voxels")
    return image
