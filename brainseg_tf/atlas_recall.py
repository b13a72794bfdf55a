"""Atlas recall: a baseline that labels structures without reading them, which every network must beat.

The ``structures`` atlas (FreeSurfer's ``cvs_avg35_inMNI152`` aparc+aseg, `brainseg_tf.datasets.freesurfer_atlas`)
lives in MNI space. Two ways to lay it on a subject, by nearest neighbour, neither looking at the structures
in the image:

- ``placed``: the subject's world millimetres taken as MNI millimetres (no reading of the scan at all);
- ``moments``: the atlas brain moved and stretched onto the subject's brain mask by their first and second
  moments (centroid and covariance of the voxel centres in world mm): a subject point ``y`` reads the atlas at
  ``mu_atlas + C_atlas^(1/2) C_subject^(-1/2) (y - mu_subject)`` (symmetric square roots). Only the mask is
  read, the crudest affine registration there is.

Geometry: label maps with their affines; the result lies on the subject's grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from brainseg_tf.io import LabelMap

Alignment = Literal["placed", "moments"]
ALIGNMENTS: tuple[Alignment, ...] = ("placed", "moments")


def recall_atlas(atlas: LabelMap, shape: tuple[int, int, int], affine: np.ndarray, alignment: Alignment = "placed",
                 brain_mask: np.ndarray | None = None) -> LabelMap:
    """The atlas's labels on the grid (``shape``, ``affine``), laid by ``alignment`` (module docstring).

    Args:
        atlas: label map in MNI mm, 0 outside the brain (e.g. `structures_on_template` as class indices).
        shape, affine: the subject's grid.
        alignment: ``placed`` or ``moments``.
        brain_mask: the subject's brain on that grid (bool); needed for ``moments`` only.

    Raises:
        ValueError: an unknown alignment, a missing, empty or misshapen brain mask for ``moments``, or an atlas
            without brain.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"Expected alignment in {ALIGNMENTS}. Received: {alignment!r}")
    affine = np.asarray(affine, dtype=np.float64)
    world_to_atlas = np.linalg.inv(np.asarray(atlas.affine, dtype=np.float64))
    subject_to_world = affine
    if alignment == "moments":
        subject_to_world = _moments_map(atlas, affine, _checked_mask(brain_mask, shape)) @ affine
    index_map = world_to_atlas @ subject_to_world  # subject voxel -> atlas voxel
    array = ndimage.affine_transform(np.asarray(atlas.array), index_map[:3, :3], offset=index_map[:3, 3],
                                     output_shape=tuple(shape), order=0, mode="constant", cval=0)
    return LabelMap(array, affine)


def _moments_map(atlas: LabelMap, affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """4x4 world-to-world map taking the subject's brain moments to the atlas brain's."""
    return moments_map(brain_moments(mask, affine), brain_moments(np.asarray(atlas.array) > 0, np.asarray(atlas.affine, dtype=np.float64)))


def moments_map(source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """4x4 map taking points of a brain with moments ``source`` (centroid, covariance) to the matching points of a brain
    with moments ``target``: ``y -> mu_t + C_t^(1/2) C_s^(-1/2) (y - mu_s)`` (symmetric square roots)."""
    (source_mean, source_cov), (target_mean, target_cov) = source, target
    linear = _sqrt_psd(target_cov) @ np.linalg.inv(_sqrt_psd(source_cov))
    mapping = np.eye(4)
    mapping[:3, :3] = linear
    mapping[:3, 3] = target_mean - linear @ source_mean
    return mapping


def brain_moments(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and covariance (3, 3) of a brain mask's voxel centres in the frame ``affine`` maps to (e.g. world mm).

    Raises:
        ValueError: fewer than 4 voxels.
    """
    return _moments(np.asarray(mask, dtype=bool), np.asarray(affine, dtype=np.float64))


def _moments(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and covariance (3, 3) of the mask's voxel centres in world mm."""
    points = affine[:3, :3] @ np.argwhere(mask).T.astype(np.float64) + affine[:3, 3:4]
    if points.shape[1] < 4:
        raise ValueError(f"Expected a brain of at least 4 voxels to take its moments. Received: {points.shape[1]}")
    return points.mean(axis=1), np.cov(points)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    if values.min() <= 0:
        raise ValueError(f"Expected a brain extended along every axis. Received: covariance eigenvalues {np.round(values, 3).tolist()}")
    return (vectors * np.sqrt(values)) @ vectors.T


def _checked_mask(mask: np.ndarray | None, shape: tuple[int, int, int]) -> np.ndarray:
    if mask is None:
        raise ValueError("Expected a brain mask for alignment 'moments'. Received: None")
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"Expected a brain mask of the grid's shape {tuple(shape)}. Received: {mask.shape}")
    if not mask.any():
        raise ValueError("Expected a brain mask with brain voxels. Received: an empty mask")
    return mask.astype(bool)
