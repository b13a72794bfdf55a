"""Robust intensity normalisation: percentile clipping, then scaling to [0, 1]."""

from __future__ import annotations

import numpy as np


def normalize_intensity(image: np.ndarray, lower_percentile: float = 0.5, upper_percentile: float = 99.5) -> np.ndarray:
    """Clip to percentiles of the voxels above the image minimum, then scale to [0, 1] (float32).

    Percentiles are taken over the voxels above the minimum (the head, not the air
    around it) so that the amount of background does not move them.

    Raises:
        ValueError: percentiles out of order, or an image without contrast.
    """
    if not 0 <= lower_percentile < upper_percentile <= 100:
        raise ValueError(
            f"Expected 0 <= lower_percentile < upper_percentile <= 100. "
            f"Received: lower_percentile={lower_percentile}, upper_percentile={upper_percentile}"
        )
    image = np.asarray(image, dtype=np.float32)
    floor = image.min()
    foreground = image[image > floor]
    if foreground.size == 0:
        raise ValueError("Expected an image with contrast. Received: a constant image")
    low, high = np.percentile(foreground, [lower_percentile, upper_percentile])
    if high <= low:
        low, high = float(floor), float(foreground.max())
    scaled = (np.clip(image, low, high) - low) / (high - low)
    return scaled.astype(np.float32)
