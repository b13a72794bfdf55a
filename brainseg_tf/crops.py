"""Zero-padded crops of arrays: what training samples read and what inference stacks are cut with.

Whatever a crop reaches outside the array reads as 0 (image 0, labels 0 = background), in training
(`brainseg_tf.data.sampling`) and inference (`inference.predict`) alike, so a network sees the same
thing at a volume's edge in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["crop", "crop_at"]


def crop(array: np.ndarray, centre: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Exact crop of `size` centred on `centre` (start ``centre - size // 2``), zero outside the array."""
    return crop_at(array, [c - n // 2 for c, n in zip(centre, size)], size)


def crop_at(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Exact crop of `size` from corner `start` (may lie outside the array), zero outside the array."""
    out = np.zeros(tuple(size), dtype=array.dtype)
    source, target = [], []
    for first, n, extent in zip(start, size, array.shape):
        low, high = max(first, 0), min(first + n, extent)
        if high <= low:
            return out
        source.append(slice(low, high))
        target.append(slice(low - first, high - first))
    out[tuple(target)] = array[tuple(source)]
    return out
