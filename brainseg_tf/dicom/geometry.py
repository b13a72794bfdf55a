"""DICOM slice geometry as small pure numpy functions: LPS <-> RAS, slice order, the voxel-to-world affine.

DICOM places pixels in the patient coordinate system LPS+ (x to the patient's Left, y Posterior,
z Superior); brainseg-tf's affines map voxels to RAS+ (nibabel's convention), so x and y change sign.
A volume read from slices is indexed (i, j, k) = (column, row, slice): i runs along a row (the
first ImageOrientationPatient triple), j down a column (the second triple), k along the slice
normal (row x column), slices sorted by their position on it. The affine's third column is the mean
step between slice positions (what dcm2niix and nibabel use), so the geometry of the slices is kept exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Maps DICOM patient coordinates (LPS+) to RAS+ world coordinates; its own inverse."""

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between two slices' direction cosines still taken as one orientation."""
SPACING_TOLERANCE = 0.01
"""Largest relative deviation of one slice step from the median step still taken as even spacing."""
TILT_TOLERANCE_DEGREES = 0.1
"""Largest angle between the slice stacking direction and the slice normal still taken as no tilt."""


@dataclass(frozen=True)
class SliceStack:
    """Where a series' slices lie, sorted along the slice normal.

    Attributes:
        order: indices into the given slices, lowest position on the normal first.
        affine: 4x4 voxel (column, row, slice) to RAS+ mm.
    """

    order: np.ndarray
    affine: np.ndarray


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """The unit normal (row direction x column direction) of ImageOrientationPatient's six cosines (LPS)."""
    orientation = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def lps_affine(orientation: np.ndarray, spacing: np.ndarray, first: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The voxel (column, row, slice) to LPS+ mm affine of a slice stack.

    Args:
        orientation: ImageOrientationPatient, six cosines (row direction, then column direction).
        spacing: PixelSpacing, (between rows, between columns) in mm, as DICOM orders it.
        first: ImagePositionPatient of the first slice (its first pixel's centre).
        step: world displacement (mm) from one slice to the next.
    """
    orientation = np.asarray(orientation, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * float(spacing[1])
    affine[:3, 1] = orientation[3:] * float(spacing[0])
    affine[:3, 2] = np.asarray(step, dtype=np.float64)
    affine[:3, 3] = np.asarray(first, dtype=np.float64)
    return affine


def stack_slices(orientation: np.ndarray, spacing: np.ndarray, positions: np.ndarray, thickness: float | None = None) -> SliceStack:
    """Sort slices along their normal and build the RAS+ affine; the caller has checked `stack_problem` first.

    Args:
        orientation: the slices' common ImageOrientationPatient.
        spacing: their common PixelSpacing (row spacing, column spacing).
        positions: (N, 3) ImagePositionPatient of each slice, N >= 1.
        thickness: SliceThickness, the step for a lone slice (else 1 mm).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    normal = slice_normal(orientation)
    order = np.argsort(positions @ normal, kind="stable")
    if len(order) > 1:
        step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    else:
        step = normal * (thickness or 1.0)
    return SliceStack(order, LPS_TO_RAS @ lps_affine(orientation, spacing, positions[order[0]], step))


def stack_problem(orientation: np.ndarray, positions: np.ndarray) -> str | None:
    """Why sorted slice positions do not make one evenly spaced, untilted 3D volume; None when they do.

    Checks, in order: two slices at one position, a stacking direction off the normal (gantry tilt or
    shear), slices missing (a gap a whole number of steps wide), uneven spacing.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    normal = slice_normal(orientation)
    along = np.sort(positions @ normal)
    steps = np.diff(along)
    if steps.size == 0:
        return None
    median = float(np.median(steps))
    repeated = int(np.sum(steps < max(1e-3, SPACING_TOLERANCE * median)))
    if repeated:
        return f"{repeated + 1} slices share positions (several volumes in one series?); expected one slice per position"
    span = positions[np.argmax(positions @ normal)] - positions[np.argmin(positions @ normal)]
    tilt = float(np.degrees(np.arccos(np.clip(abs(span @ normal) / np.linalg.norm(span), 0.0, 1.0))))
    if tilt > TILT_TOLERANCE_DEGREES:
        return f"slices stacked {tilt:.2f} degrees off their normal (gantry tilt or shear); not resampled"
    uneven = np.abs(steps - median) > SPACING_TOLERANCE * median
    if not uneven.any():
        return None
    multiples = steps[uneven] / median
    if np.allclose(multiples, np.round(multiples), atol=SPACING_TOLERANCE) and (np.round(multiples) >= 2).all():
        missing = int(np.sum(np.round(multiples) - 1))
        return f"{missing} slice(s) missing (gaps in the slice positions, step {median:.3g} mm)"
    return f"uneven slice spacing ({steps.min():.3g} to {steps.max():.3g} mm)"


def same_orientation(first: np.ndarray, second: np.ndarray) -> bool:
    """True when two ImageOrientationPatient values agree within `ORIENTATION_TOLERANCE`."""
    return bool(np.allclose(np.asarray(first, np.float64), np.asarray(second, np.float64), atol=ORIENTATION_TOLERANCE))


def slice_index(ras_affine: np.ndarray, position_lps: np.ndarray, tolerance_mm: float = 0.01) -> int | None:
    """The slice index k of a plane whose first pixel lies at ``position_lps``, on a grid's (column, row, slice) affine.

    Returns None when the position is not the first pixel of one of the grid's slices.
    """
    world = LPS_TO_RAS[:3, :3] @ np.asarray(position_lps, dtype=np.float64)
    index = np.linalg.solve(ras_affine[:3, :3], world - ras_affine[:3, 3])
    k = int(np.round(index[2]))
    back = ras_affine[:3, :3] @ np.array([0.0, 0.0, k]) + ras_affine[:3, 3]
    return k if np.linalg.norm(back - world) <= tolerance_mm else None
