"""Degradations of one synthetic head for the realistic-heads suite: pure functions on (image, head labels) pairs.

Each function takes an `Image` and the head's generation labels (`brainseg_tf.datasets.heads.HEAD_LABELS`,
0 air) on one grid and returns a new pair on one grid, the input's or a new one: images are resampled
linearly, label maps by nearest neighbour (their kind decides, as in `brainseg_tf.geometry.conform`), so
references derived from the labels stay integer and lie on the image's own grid, voxel for voxel.

Geometry: RAS+ grids, arrays indexed (i, j, k) (axis 0 towards Right, 1 Anterior, 2 Superior); affines
map voxels to world millimetres. Images are float32 and never negative (magnitude images).
"""

from __future__ import annotations

from typing import TypeVar

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainseg_tf.data.synthesis import FWHM_TO_SIGMA, add_rician_noise
from brainseg_tf.datasets.heads import AIR, AIRWAY, NASAL_CAVITY, SINUS_AIR
from brainseg_tf.fields import BIAS_KNOTS_PER_FIELD_OF_VIEW, SmoothField
from brainseg_tf.geometry import CANONICAL_AXCODES, conform
from brainseg_tf.io import Image, LabelMap, Volume

Pair = tuple[Image, LabelMap]
V = TypeVar("V", bound=Volume)

AIR_LIKE = (AIR, SINUS_AIR, NASAL_CAVITY, AIRWAY)
"""Labels `t2_like` leaves dark: air outside and inside the head stays air on any contrast."""
_OUTSIDE = 255  # label written where a resampled grid leaves the source's field of view (head labels are < 30)


def head_voxels(labels: LabelMap) -> np.ndarray:
    """Bool mask of the head: every label but air."""
    return np.asarray(labels.array) != AIR


def mean_head_intensity(image: Image, labels: LabelMap) -> float:
    """Mean intensity over the head's voxels (the synthesis' "mean foreground intensity")."""
    return float(np.mean(image.array[head_voxels(labels)], dtype=np.float64))


def cropped(volume: V, box: tuple[slice, slice, slice]) -> V:
    """The sub-grid ``box`` (slices with steps of 1) of a volume, its affine shifted so voxels keep their world points."""
    starts = [0 if s.start is None else int(s.start) for s in box]
    shift = np.eye(4)
    shift[:3, 3] = starts
    return type(volume)(np.ascontiguousarray(volume.array[box]), volume.affine @ shift)


def thick_slices(image: Image, labels: LabelMap, axis: int, factor: float = 5.0) -> Pair:
    """Thick slices along ``axis``: blur to a slice ``factor`` voxels thick (Gaussian of FWHM one slice, as
    `brainseg_tf.data.synthesis`), then resample onto the grid whose voxels are ``factor`` times longer along
    ``axis`` (`brainseg_tf.geometry.conformed_grid`: same field of view, same centre). Labels nearest."""
    if axis not in (0, 1, 2) or not factor > 1:
        raise ValueError(f"Expected axis in (0, 1, 2) and factor > 1. Received: axis={axis!r}, factor={factor!r}")
    blurred = ndimage.gaussian_filter1d(image.array, FWHM_TO_SIGMA * factor, axis=axis, mode="nearest", truncate=3.0)
    target = image.voxel_size.copy()
    target[axis] *= factor
    return resampled(Image(blurred.astype(np.float32), image.affine), labels, tuple(float(s) for s in target))


def resampled(image: Image, labels: LabelMap, voxel_size: float | tuple[float, float, float]) -> Pair:
    """Both volumes on the grid at ``voxel_size`` covering the same field of view: image linear, labels nearest."""
    moved, _ = conform(image, voxel_size)
    moved_labels, _ = conform(labels, voxel_size)
    return Image(np.asarray(moved.array, np.float32), moved.affine), LabelMap(np.ascontiguousarray(moved_labels.array), moved_labels.affine)


def head_box(labels: LabelMap, margin_mm: float, height_mm: float | None = None) -> tuple[slice, slice, slice]:
    """Index box around the head's voxels grown by ``margin_mm``, clipped to the grid; with ``height_mm``, at
    most that far down from the top of the head (axis 2 is Superior on a RAS+ grid)."""
    _check_ras(labels)
    margin = np.ceil(margin_mm / labels.voxel_size).astype(int)
    where = np.nonzero(head_voxels(labels))
    low = np.maximum([int(w.min()) for w in where] - margin, 0)
    high = np.minimum([int(w.max()) + 1 for w in where] + margin, labels.shape)
    if height_mm is not None:
        low[2] = max(low[2], high[2] - int(np.floor(height_mm / labels.voxel_size[2])))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` about the unit vector ``axis`` (right-handed, Rodrigues' formula)."""
    u = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    angle = np.deg2rad(angle_deg)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def rotated(image: Image, labels: LabelMap, axis: np.ndarray, angle_deg: float, rng: np.random.Generator) -> Pair:
    """The head rotated by ``angle_deg`` about ``axis`` (world, through the centre of the head's box), resampled
    onto a lattice of the input grid (same voxel size and direction cosines) grown to hold the whole rotated
    head. Image linear, labels nearest; voxels beyond the input's field of view are air, their intensities
    drawn from the input's own air voxels (its noise floor), so no seam of zeros shows."""
    _check_ras(labels)
    box = head_box(labels, 0.0)
    corners = np.array([[b.start - 0.5 if c == 0 else b.stop - 0.5 for b, c in zip(box, bits)] for bits in np.ndindex(2, 2, 2)])
    world = _world(labels.affine, corners)
    centre = world.mean(axis=0)
    rotation = np.eye(4)
    rotation[:3, :3] = rotation_matrix(axis, angle_deg)
    rotation[:3, 3] = centre - rotation[:3, :3] @ centre
    moved = _world(np.linalg.inv(labels.affine), _world(rotation, world))  # rotated corners in input voxel indices
    low, high = np.floor(moved.min(axis=0)).astype(int) - 2, np.ceil(moved.max(axis=0)).astype(int) + 2
    shift = np.eye(4)
    shift[:3, 3] = low
    affine = labels.affine @ shift
    index_map = np.linalg.inv(labels.affine) @ np.linalg.inv(rotation) @ affine  # output voxel -> input voxel
    shape = tuple(int(n) for n in high - low + 1)
    matrix, offset = index_map[:3, :3], index_map[:3, 3]
    out_labels = ndimage.affine_transform(np.asarray(labels.array, np.uint8), matrix, offset, shape, order=0, mode="constant",
                                          cval=_OUTSIDE, prefilter=False)
    out = ndimage.affine_transform(image.array, matrix, offset, shape, order=1, mode="nearest", prefilter=False)
    outside = out_labels == _OUTSIDE
    out[outside] = rng.choice(image.array[~head_voxels(labels)], size=int(outside.sum()))
    out_labels[outside] = AIR
    return Image(out.astype(np.float32), affine), LabelMap(out_labels, affine)


def biased(image: Image, labels: LabelMap, low: float, high: float, rng: np.random.Generator) -> Image:
    """Multiplied by a smooth field (a coarse cubic B-spline, `brainseg_tf.fields`) that spans exactly
    [low, high] over the head's voxels (clipped to that range outside the head)."""
    shape = image.shape
    field = SmoothField.random(rng, shape, max(shape) / BIAS_KNOTS_PER_FIELD_OF_VIEW, channels=1)
    values = field.evaluate([np.arange(n, dtype=np.float32) for n in shape])[0]
    head = values[head_voxels(labels)]
    unit = (values - head.min()) / max(float(head.max() - head.min()), 1e-12)
    gain = np.clip(low + (high - low) * unit, low, high).astype(np.float32)
    return image.with_array(image.array * gain)  # type: ignore[return-value]


def rician(image: Image, labels: LabelMap, snr: float, base_snr: float, rng: np.random.Generator) -> Image:
    """Rician noise brought to ``snr`` (mean head intensity / noise std): the image already carries noise at
    ``base_snr``, so complex Gaussian noise of std ``mean * sqrt(1/snr**2 - 1/base_snr**2)`` is added and the
    magnitude taken (`brainseg_tf.data.synthesis.add_rician_noise`)."""
    extra = 1.0 / snr**2 - 1.0 / base_snr**2
    if not extra > 0:
        raise ValueError(f"Expected snr below the image's own SNR {base_snr:.1f}. Received: snr={snr!r}")
    return image.with_array(add_rician_noise(image.array, float(extra**-0.5), rng, head_voxels(labels)))  # type: ignore[return-value]


def gamma_changed(image: Image, labels: LabelMap, gamma: float) -> Image:
    """Intensities mapped to [0, 1] (lowest voxel to the brightest head voxel), raised to ``gamma``, mapped back."""
    low, high = float(image.array.min()), float(image.array[head_voxels(labels)].max())
    unit = np.clip((image.array - np.float32(low)) / np.float32(max(high - low, 1e-12)), 0.0, 1.0)
    return image.with_array((low + (high - low) * unit ** np.float32(gamma)).astype(np.float32))  # type: ignore[return-value]


def cropped_top(image: Image, labels: LabelMap, depth_mm: float) -> Pair:
    """The field of view cut ``depth_mm`` below the top of the head: the slices above are dropped from both grids."""
    _check_ras(labels)
    top = int(np.nonzero(head_voxels(labels).any(axis=(0, 1)))[0].max())
    keep = top + 1 - int(round(depth_mm / float(labels.voxel_size[2])))
    if keep < 1:
        raise ValueError(f"Expected a crop depth within the head's height. Received: depth_mm={depth_mm!r}")
    box = (slice(None), slice(None), slice(0, keep))
    return cropped(image, box), cropped(labels, box)  # type: ignore[arg-type]


def t2_like(image: Image, labels: LabelMap) -> Image:
    """Intensities inverted inside the head (``max - x`` over non-air labels, `AIR_LIKE` left as they are): bright
    fluid, dark white matter, while air stays dark."""
    tissue = ~np.isin(labels.array, AIR_LIKE)
    out = image.array.copy()
    out[tissue] = out[tissue].max() - out[tissue]
    return image.with_array(out)  # type: ignore[return-value]


def rician_background(image: Image, sigma: float, rng: np.random.Generator) -> Image:
    """Pure Rician noise of component std ``sigma`` (no signal: Rayleigh magnitudes) on the image's grid."""
    real = rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = rng.standard_normal(image.shape, dtype=np.float32)
    return image.with_array(np.hypot(real, imaginary) * np.float32(sigma))  # type: ignore[return-value]


def _world(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N, 3) points through a 4x4 affine."""
    return np.asarray(indices, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


def _check_ras(volume: Volume) -> None:
    axcodes = nib.aff2axcodes(volume.affine)
    if tuple(axcodes) != CANONICAL_AXCODES:
        raise ValueError(f"Expected a RAS+ grid (brainseg_tf.geometry.conform). Received: axes {''.join(axcodes)}")
