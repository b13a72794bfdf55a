"""Optional cleanup of a label map: the largest connected component of each class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

FACE_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)
"""6-connectivity: voxels sharing a face are connected."""


def keep_largest_components(labels: np.ndarray, scores: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Keep only the largest 6-connected component of each class in ``classes``.

    A removed voxel takes its most probable class among those it may keep: the classes other than
    the one it was removed from (background included). The reassignment is done once, so a class
    can gain a few disconnected voxels from a neighbour's removed islands; that is rare and small.

    Args:
        labels: class indices (I, J, K).
        scores: per-class scores (I, J, K, num_classes) on the same grid.
        classes: the classes to clean (usually every foreground class).

    Returns:
        A new uint8 label map.
    """
    if scores.shape[:3] != labels.shape or scores.ndim != 4:
        raise ValueError(f"Expected scores (I, J, K, classes) on the labels' grid {labels.shape}. Received: {scores.shape}")
    cleaned = np.array(labels, dtype=np.uint8)
    removed = np.zeros(labels.shape, dtype=bool)
    forbidden = np.zeros(labels.shape, dtype=np.int16)
    for index in classes:
        islands = _outside_largest_component(labels == index)
        removed |= islands
        forbidden[islands] = index
    if removed.any():
        candidates = np.array(scores[removed], dtype=np.float32)
        candidates[np.arange(candidates.shape[0]), forbidden[removed]] = -np.inf
        cleaned[removed] = np.argmax(candidates, axis=-1).astype(np.uint8)
    return cleaned


def _outside_largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask, structure=FACE_CONNECTIVITY)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return (components != np.argmax(sizes)) & mask
