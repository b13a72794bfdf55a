"""Robust intensity normalisation: percentile clipping, then scaling to [0, 1]."""

from __future__ import annotations

import numpy as np


def normalize_intensity(image: np.ndarray, lower_percentile: float = 0.5, upper_percentile: float = 99.5) -> np.ndarray:
    """Clip to percentiles of the foreground voxels, then scale to [0, 1] (float32).

    The foreground is the voxels above the image's own ``lower_percentile`` (the head, not
    the air around it), so that neither the amount of background nor a few voxels colder
    than the air move the percentiles. With ``lower_percentile=0`` that floor is the minimum.

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
    floor = _low_percentile(image, lower_percentile)
    foreground = image[image > floor]
    if foreground.size == 0:
        raise ValueError("Expected an image with contrast. Received: a constant image")
    low, high = np.percentile(foreground, [lower_percentile, upper_percentile])
    if high <= low:
        low, high = float(floor), float(foreground.max())
    scaled = image.astype(np.float64)  # one float64 buffer, worked in place: (clip(x) - low) / (high - low)
    np.clip(scaled, low, high, out=scaled)
    scaled -= low
    scaled /= high - low
    np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled.astype(np.float32)


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
