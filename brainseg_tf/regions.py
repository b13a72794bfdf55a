"""Where a structure can be: its box in the atlas, carried onto a subject by brain moments (cropped ensemble members).

An ensemble member of a small structure need not read the whole brain. At training time the ``structures`` atlas
(MNI mm) gives each member class a box, its voxels' extent grown by a margin (`atlas_regions`), and the atlas brain
its moments (`atlas_frame`: centroid and covariance). At inference the subject's brain (the nonzero region of the
brain-blanked, conformed image) gives its own moments, and `region_box` carries the box's eight corners onto the
subject's grid by the map that matches the two brains' moments (`brainseg_tf.atlas_recall.moments_map`), then takes
their bounding box. A member of a left/right pair reads its own class's box on the mirrored volume, so mirrored
members need no box of their own.

Geometry: boxes in world mm of the atlas (RAS+); subject boxes as array slices of the conformed grid (RAS+, isotropic).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from brainseg_tf.atlas_recall import brain_moments, moments_map
from brainseg_tf.io import LabelMap

Moments = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Region:
    """An axis-aligned box in the atlas's world mm: ``low`` < ``high`` on every axis."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def __post_init__(self) -> None:
        values = (*self.low, *self.high)
        if len(self.low) != 3 or len(self.high) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"Expected a region as two finite 3-vectors. Received: low={self.low!r}, high={self.high!r}")
        if not all(a < b for a, b in zip(self.low, self.high)):
            raise ValueError(f"Expected a region with low < high on every axis. Received: low={self.low!r}, high={self.high!r}")

    def to_list(self) -> list[list[float]]:
        return [list(self.low), list(self.high)]

    @classmethod
    def from_list(cls, value: object) -> Region:
        """From ``[[x, y, z], [x, y, z]]`` (bundle.json).

        Raises:
            ValueError: another shape, or values `Region` refuses.
        """
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) and len(v) == 3 for v in value)):
            raise ValueError(f"Expected a region as [[x, y, z], [x, y, z]] mm. Received: {value!r}")
        low, high = value
        return cls(tuple(low), tuple(high))  # type: ignore[arg-type]


@dataclass(frozen=True)
class AtlasFrame:
    """The atlas brain's moments in world mm: centroid (3) and covariance (3 x 3, symmetric positive definite)."""

    mean: tuple[float, float, float]
    covariance: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        mean, covariance = np.asarray(self.mean, dtype=float), np.asarray(self.covariance, dtype=float)
        if mean.shape != (3,) or covariance.shape != (3, 3) or not (np.isfinite(mean).all() and np.isfinite(covariance).all()):
            raise ValueError(f"Expected an atlas frame with a 3-vector mean and a 3 x 3 covariance. Received: {self.mean!r}, {self.covariance!r}")
        if not np.allclose(covariance, covariance.T) or np.linalg.eigvalsh(covariance).min() <= 0:
            raise ValueError(f"Expected a symmetric positive-definite covariance. Received: {self.covariance!r}")

    def moments(self) -> Moments:
        return np.asarray(self.mean, dtype=np.float64), np.asarray(self.covariance, dtype=np.float64)

    def to_dict(self) -> dict[str, list]:
        return {"mean": list(self.mean), "covariance": [list(row) for row in self.covariance]}

    @classmethod
    def from_dict(cls, value: object) -> AtlasFrame:
        """From ``{"mean": [3], "covariance": [[3] x 3]}`` (bundle.json).

        Raises:
            ValueError: another shape, or values `AtlasFrame` refuses.
        """
        if not (isinstance(value, dict) and set(value) == {"mean", "covariance"}):
            raise ValueError(f"Expected an atlas frame as {{mean, covariance}}. Received: {value!r}")
        return cls(tuple(value["mean"]), tuple(tuple(row) for row in value["covariance"]))  # type: ignore[arg-type]


def atlas_frame(atlas: LabelMap) -> AtlasFrame:
    """The moments of the atlas brain (labels > 0) in world mm."""
    mean, covariance = brain_moments(np.asarray(atlas.array) > 0, np.asarray(atlas.affine, dtype=np.float64))
    return AtlasFrame(tuple(float(v) for v in mean), tuple(tuple(float(v) for v in row) for row in covariance))  # type: ignore[arg-type]


def atlas_regions(atlas: LabelMap, classes: Iterable[int], margin_mm: float) -> dict[int, Region]:
    """Each class's box in the atlas (its voxel centres' extent in world mm) grown by ``margin_mm`` on every side.

    Raises:
        ValueError: a negative margin, or a class the atlas does not hold.
    """
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"Expected a region margin >= 0 mm. Received: {margin_mm!r}")
    array = np.asarray(atlas.array)
    affine = np.asarray(atlas.affine, dtype=np.float64)
    regions = {}
    for index in classes:
        voxels = np.argwhere(array == index)
        if voxels.size == 0:
            raise ValueError(f"Expected every member class in the atlas. Received: class {index}, absent")
        corners = np.array(np.meshgrid(*zip(voxels.min(axis=0), voxels.max(axis=0)), indexing="ij")).reshape(3, -1)
        world = affine[:3, :3] @ corners + affine[:3, 3:4]
        low, high = world.min(axis=1) - margin_mm, world.max(axis=1) + margin_mm
        regions[int(index)] = Region(tuple(float(v) for v in low), tuple(float(v) for v in high))  # type: ignore[arg-type]
    return regions


def subject_moments(image: np.ndarray, voxel_size: float) -> Moments | None:
    """The moments of a brain-blanked conformed image's brain (its nonzero voxels) in mm of its index grid
    (index times ``voxel_size``); None when fewer than 1000 voxels are nonzero (nothing to place a box on)."""
    mask = np.asarray(image) != 0
    if np.count_nonzero(mask) < 1000:
        return None
    return brain_moments(mask, np.diag([voxel_size, voxel_size, voxel_size, 1.0]))


def mirrored_moments(moments: Moments, shape: Sequence[int], voxel_size: float) -> Moments:
    """The moments of the same brain in the volume mirrored along axis 0 (`subject_moments` frame)."""
    mean, covariance = moments
    flip = np.diag([-1.0, 1.0, 1.0])
    mirrored_mean = np.array([(shape[0] - 1) * voxel_size - mean[0], mean[1], mean[2]])
    return mirrored_mean, flip @ covariance @ flip


def region_box(region: Region, frame: AtlasFrame, moments: Moments, voxel_size: float, shape: Sequence[int]) -> tuple[slice, slice, slice] | None:
    """The array box of a subject's conformed grid that ``region`` lands on: the atlas box's corners carried by the map
    matching the atlas brain's moments (``frame``) to the subject's (``moments``, `subject_moments`), their bounding
    box in voxels (rounded outwards), clipped to the grid; None when it misses the grid."""
    mapping = moments_map(frame.moments(), moments)
    corners = np.array(np.meshgrid(*zip(region.low, region.high), indexing="ij")).reshape(3, -1)
    voxels = (mapping[:3, :3] @ corners + mapping[:3, 3:4]) / voxel_size
    first = np.maximum(0, np.floor(voxels.min(axis=1)).astype(int))
    last = np.minimum(np.asarray(shape), np.ceil(voxels.max(axis=1)).astype(int) + 1)
    if np.any(last <= first):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(first, last))  # type: ignore[return-value]
