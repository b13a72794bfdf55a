"""Scores of a label map against a reference: per-class overlap, surface distance and volume agreement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def dice_scores(predicted: np.ndarray, target: np.ndarray, class_indices: Sequence[int]) -> dict[int, float]:
    """Hard Dice of each class over all voxels of all samples, ``2|P & T| / (|P| + |T|)``; 1.0 when the
    class is absent from both (as `brainseg_tf.models.DiceScore` counts it).

    Args:
        predicted: class indices, any shape.
        target: class indices, same shape.
        class_indices: the classes scored.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"Expected predicted and target of one shape. Received: {predicted.shape} and {target.shape}")
    scores = {}
    for index in class_indices:
        in_prediction, in_target = predicted == index, target == index
        total = int(in_prediction.sum()) + int(in_target.sum())
        scores[index] = 2.0 * int((in_prediction & in_target).sum()) / total if total else 1.0
    return scores


def class_surface(mask: np.ndarray) -> np.ndarray:
    """The surface of a boolean mask: its voxels with at least one 6-neighbour outside it.

    Voxels on the array's border count as surface (beyond the array is outside the mask).

    Args:
        mask: boolean array, 3D (any rank works: neighbours along each axis).

    Returns:
        Boolean array of the mask's shape.
    """
    mask = np.asarray(mask, dtype=bool)
    face_neighbours = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=face_neighbours, border_value=0)


def hausdorff95(predicted: np.ndarray, target: np.ndarray, class_index: int, voxel_size: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance of one class, in mm.

    Surfaces as in `class_surface`; the distance of each surface voxel of one map to the nearest
    surface voxel of the other is measured between voxel centres, with the given voxel sizes
    (`scipy.ndimage.distance_transform_edt`). The result is the larger of the two directed 95th
    percentiles (predicted -> target, target -> predicted), as MONAI and medpy report it.

    Absent classes: 0.0 when the class is in neither map (nothing to disagree about); ``inf`` when
    it is in exactly one of them (no surface to measure to).

    Args:
        predicted: class indices, 3D.
        target: class indices, same shape.
        class_index: the class scored.
        voxel_size: edge lengths (mm) along the array's axes, e.g. `brainseg_tf.io.voxel_sizes(affine)`.

    Raises:
        ValueError: shapes differ or voxel sizes do not match the array's rank or are not positive.
    """
    _check_pair(predicted, target)
    sizes = np.asarray(voxel_size, dtype=np.float64)
    if sizes.shape != (predicted.ndim,) or not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise ValueError(f"Expected {predicted.ndim} positive voxel sizes (mm). Received: voxel_size={voxel_size}")
    masks = [np.asarray(labels) == class_index for labels in (predicted, target)]
    either = masks[0] | masks[1]
    if not either.any():
        return 0.0
    # Surfaces and distances inside the union's box grown by one voxel are those of the whole array: every voxel
    # beyond it is outside both masks. Eroding only the box keeps a small structure cheap in a large volume.
    grown = tuple(slice(max(part.start - 1, 0), min(part.stop + 1, size)) for part, size in zip(_bounding_box(either), either.shape))
    surfaces = [class_surface(mask[grown]) for mask in masks]
    if not all(surface.any() for surface in surfaces):
        return float("inf")
    box = _bounding_box(surfaces[0] | surfaces[1])
    first, second = (surface[box] for surface in surfaces)
    forward = ndimage.distance_transform_edt(~second, sampling=sizes)[first]
    backward = ndimage.distance_transform_edt(~first, sampling=sizes)[second]
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def class_volume(labels: np.ndarray, class_index: int, voxel_size: Sequence[float]) -> float:
    """Volume of one class in mm^3: its voxel count times the volume of one voxel."""
    return float(np.count_nonzero(np.asarray(labels) == class_index) * np.prod(np.asarray(voxel_size, dtype=np.float64)))


def volume_difference(predicted: np.ndarray, target: np.ndarray, class_index: int, voxel_size: Sequence[float]) -> float:
    """Absolute volume difference of one class in mm^3, ``|V(predicted) - V(target)|``.

    Always defined (0.0 when the class is absent from both); divide by
    ``class_volume(target, ...)`` for the difference relative to the reference.

    Raises:
        ValueError: shapes differ.
    """
    _check_pair(predicted, target)
    return abs(class_volume(predicted, class_index, voxel_size) - class_volume(target, class_index, voxel_size))


def _check_pair(predicted: np.ndarray, target: np.ndarray) -> None:
    if predicted.shape != target.shape:
        raise ValueError(f"Expected predicted and target of one shape. Received: {predicted.shape} and {target.shape}")


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty mask.

    Distances to the surface voxels inside it are exact within it: no surface voxel lies outside.
    """
    corners = np.argwhere(mask)
    return tuple(slice(int(low), int(high) + 1) for low, high in zip(corners.min(axis=0), corners.max(axis=0)))
