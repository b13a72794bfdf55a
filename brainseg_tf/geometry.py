"""Conform volumes to one canonical grid (RAS+ axis order, target voxel size) and map results back.

Canonical orientation (RAS+, nibabel's "closest canonical"): array axis 0 increases towards
the subject's Right, axis 1 towards Anterior, axis 2 towards Superior. The direction cosines of
the input are kept (an oblique scan stays oblique by a few degrees); only the axis order, the
axis signs and the voxel size change. So a volume already at the target voxel size is conformed
by a pure permutation/flip of its array, and its inverse is exact, voxel for voxel.

The kind of volume decides the interpolation (as TorchIO's image types do): an `Image` is resampled
linearly, a `LabelMap` by nearest neighbour, so a label map can never become fractional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import nibabel.orientations as nio
import numpy as np
from scipy import ndimage

from brainseg_tf.io import Image, LabelMap, Volume, voxel_sizes

Interpolation = Literal["linear", "nearest"]
INTERPOLATIONS = ("linear", "nearest")
CANONICAL_AXCODES = ("R", "A", "S")
VOXEL_SIZE_TOLERANCE = 1e-3  # mm; voxel sizes this close to the target are not resampled


@dataclass(frozen=True)
class Grid:
    """A voxel grid: spatial shape and voxel-to-world affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray


@dataclass(frozen=True)
class ConformInverse:
    """Maps arrays on the conformed grid back onto the input's own grid.

    Attributes:
        input_grid: the original shape and affine.
        reoriented_grid: the input after axis permutation/flips (before resampling).
        conformed_grid: the grid `conform` returned.
        orientation: nibabel orientation transform input -> canonical (undone last).
    """

    input_grid: Grid
    reoriented_grid: Grid
    conformed_grid: Grid
    orientation: np.ndarray

    @property
    def only_reorients(self) -> bool:
        """True when `conform` did not resample: going back permutes and flips axes, nothing else.

        Voxelwise functions (e.g. an argmax over classes) then give the same result before or after
        this inverse.
        """
        return _same_grid(self.reoriented_grid, self.conformed_grid)

    def __call__(
        self, volume: Volume | np.ndarray, interpolation: Interpolation | None = None, region: tuple[slice, slice, slice] | None = None
    ) -> Volume:
        """Put a volume on the conformed grid (3D, or 4D channels-last) back onto the input grid.

        Args:
            volume: an `Image` or `LabelMap` (its kind decides the interpolation), or a bare array
                with ``interpolation`` given.
            interpolation: ``nearest`` for label maps, ``linear`` for images and probabilities; only
                for a bare array (or the same as the volume's kind).
            region: only the input voxels within this box of the conformed grid (grown by one
                conformed voxel) are resampled, the others are 0: for a volume that is 0 outside
                it (e.g. a mask), the same result at the cost of the box alone.

        Returns:
            A volume of the same kind (an `Image` or `LabelMap` for a bare array) with exactly the
            input's shape and affine.

        Raises:
            ValueError: no interpolation for a bare array, one that contradicts the kind, or an
                array off the conformed grid.
        """
        interpolation = _interpolation_for(volume, interpolation)
        array = volume.array if isinstance(volume, Volume) else np.asarray(volume)
        if tuple(array.shape[:3]) != self.conformed_grid.shape:
            raise ValueError(
                f"Expected an array on the conformed grid {self.conformed_grid.shape}. Received: shape={array.shape}"
            )
        if region is None:
            resampled = _resample(array, self.conformed_grid, self.reoriented_grid, interpolation)
        else:
            resampled = self._resample_region(array, interpolation, region)
        back = nio.apply_orientation(resampled, _inverse_orientation(self.orientation))
        kind = Image if interpolation == "linear" else LabelMap
        return kind(np.ascontiguousarray(back), self.input_grid.affine.copy())


    def _resample_region(self, array: np.ndarray, interpolation: Interpolation, region: tuple[slice, slice, slice]) -> np.ndarray:
        """`_resample` onto the reoriented grid, computed only where ``region`` (conformed voxels) lands; 0 elsewhere."""
        low = np.array([max(s.start or 0, 0) - 1 for s in region], float)
        high = np.array([s.stop if s.stop is not None else n for s, n in zip(region, self.conformed_grid.shape)], float)
        to_reoriented = np.linalg.solve(self.reoriented_grid.affine, self.conformed_grid.affine)  # conformed voxel -> reoriented voxel
        corners = np.stack([to_reoriented[:3, :3] @ point + to_reoriented[:3, 3] for point in (low, high)])
        shape = np.array(self.reoriented_grid.shape)
        start = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, shape)
        stop = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, 0, shape)
        out = np.zeros((*self.reoriented_grid.shape, *array.shape[3:]), array.dtype if interpolation == "nearest" else np.float32)
        if np.any(stop <= start):
            return out
        box_affine = self.reoriented_grid.affine.copy()
        box_affine[:3, 3] = self.reoriented_grid.affine[:3, :3] @ start + self.reoriented_grid.affine[:3, 3]
        box = Grid(tuple(int(n) for n in stop - start), box_affine)  # type: ignore[arg-type]
        out[tuple(slice(a, b) for a, b in zip(start, stop))] = _resample(array, self.conformed_grid, box, interpolation)
        return out


def _inverse_orientation(orientation: np.ndarray) -> np.ndarray:
    """The orientation transform that undoes ``orientation`` (axis permutation and flips)."""
    inverse = np.empty_like(orientation)
    for source_axis, (target_axis, flip) in enumerate(orientation):
        inverse[int(target_axis)] = (source_axis, flip)
    return inverse


def canonical_orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from an affine's voxel axes to RAS+."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))


def reorient(volume: Volume) -> tuple[Volume, np.ndarray]:
    """Permute/flip a volume's axes to RAS+ without resampling (exact).

    Returns:
        The reoriented volume (of the same kind) and the orientation transform applied. Its array is a view of the
        input's (permuted and flipped axes, no copy): copy it before writing into it.
    """
    orientation = canonical_orientation(volume.affine)
    array = nio.apply_orientation(volume.array, orientation)
    affine = volume.affine @ nio.inv_ornt_aff(orientation, volume.shape)
    return type(volume)(array, affine), orientation


def conformed_grid(grid: Grid, voxel_size: float | tuple[float, float, float]) -> Grid:
    """The grid at ``voxel_size`` that covers the same field of view, centred on the same point.

    Axes already within `VOXEL_SIZE_TOLERANCE` of the target keep their size and positions.
    """
    target = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    current = voxel_sizes(grid.affine)
    keep = np.abs(current - target) <= VOXEL_SIZE_TOLERANCE
    new_size = np.where(keep, current, target)
    old_shape = np.asarray(grid.shape, dtype=np.float64)
    new_shape = np.where(keep, old_shape, np.maximum(1, np.round(old_shape * current / new_size)))
    step = new_size / current  # old voxel index advanced per new voxel
    offset = (old_shape - 1) / 2 - step * (new_shape - 1) / 2
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(step)
    index_map[:3, 3] = offset
    return Grid(tuple(int(n) for n in new_shape), grid.affine @ index_map)  # type: ignore[arg-type]


def conform(volume: Image | LabelMap, voxel_size: float | tuple[float, float, float] = 1.0) -> tuple[Volume, ConformInverse]:
    """Reorient to RAS+ and resample to ``voxel_size`` mm; return the result and its inverse.

    Args:
        volume: an `Image` (resampled linearly) or a `LabelMap` (nearest neighbour), 3D or 4D channels-last.
        voxel_size: target edge length(s) in mm.

    Returns:
        (conformed volume of the same kind, inverse mapping back to the input grid). A volume already
        at the target voxel size comes back as a view of the input's array (permuted and flipped,
        never copied): copy it before writing into it.

    Raises:
        ValueError: a bare `Volume` (its kind, hence its interpolation, unknown), or bad voxel sizes.
    """
    sizes = np.asarray(voxel_size, dtype=np.float64)
    if sizes.shape not in ((), (3,)) or not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise ValueError(f"Expected one or three positive, finite voxel sizes in mm. Received: voxel_size={voxel_size}")
    interpolation = _interpolation_for(volume, None)
    reoriented, orientation = reorient(volume)
    source = Grid(reoriented.shape, reoriented.affine)
    target = conformed_grid(source, voxel_size)
    array = _resample(reoriented.array, source, target, interpolation)
    inverse = ConformInverse(Grid(volume.shape, volume.affine.copy()), source, target, orientation)
    return type(volume)(array, target.affine), inverse


def _interpolation_for(volume: Volume | np.ndarray, interpolation: str | None) -> Interpolation:
    """The interpolation a volume's kind asks for, or the one given for a bare array."""
    kind = getattr(volume, "interpolation", None)
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"Expected interpolation in {INTERPOLATIONS}. Received: interpolation={interpolation!r}")
    if kind is not None and interpolation not in (None, kind):
        raise ValueError(f"Expected {kind} interpolation for a {type(volume).__name__}. Received: interpolation={interpolation!r}")
    if kind is None and interpolation is None:
        received = type(volume).__name__
        raise ValueError(f"Expected an Image or a LabelMap (its kind decides the interpolation), or an interpolation. Received: {received}")
    return kind or interpolation  # type: ignore[return-value]


def _resample(array: np.ndarray, source: Grid, target: Grid, interpolation: Interpolation) -> np.ndarray:
    """Resample an array from ``source`` to ``target``, two grids with the same direction cosines.

    Linear interpolation of an integer array returns float32 (no truncation of in-between values);
    nearest keeps the dtype. Between equal grids the array itself comes back, in its own memory
    order: a Fortran-ordered NIfTI array is not copied into C order (later stages read any order).
    """
    if _same_grid(source, target):
        return array
    if interpolation == "linear" and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    index_map = np.linalg.solve(source.affine, target.affine)  # target voxel -> source voxel
    matrix = np.diag(index_map[:3, :3]).copy()
    offset = index_map[:3, 3]
    channels = [array] if array.ndim == 3 else [array[..., c] for c in range(array.shape[3])]
    if interpolation == "linear":
        out = [_separable_linear(channel, matrix, offset, target.shape) for channel in channels]
    else:
        out = [
            ndimage.affine_transform(channel, matrix, offset=offset, output_shape=target.shape, order=0, mode="nearest", prefilter=False)
            for channel in channels
        ]
    return out[0] if array.ndim == 3 else np.stack(out, axis=-1)


def _separable_linear(array: np.ndarray, scale: np.ndarray, offset: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resampling by an axis-aligned map (output voxel i samples input ``scale * i + offset`` per axis),
    points beyond the grid taking its edge values (`ndimage.affine_transform` with order 1, mode "nearest").

    Trilinear interpolation is linear along each axis in turn, so three one-axis passes give the same values
    (to float32 rounding) as one 3D pass, at a fraction of the cost: each pass reads two neighbours per output
    voxel, not eight. The axes that shrink most go first, so later passes work on the smaller array (ties: the
    last array axis first, which measured fastest).
    """
    out = np.asarray(array, dtype=np.float32)
    for axis in sorted(range(3), key=lambda a: (shape[a] / max(array.shape[a], 1), -a)):
        size = out.shape[axis]
        points = np.clip(scale[axis] * np.arange(shape[axis], dtype=np.float64) + offset[axis], 0.0, size - 1)
        low = np.minimum(np.floor(points).astype(np.intp), max(size - 2, 0))
        weight = (points - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        below = np.take(out, low, axis=axis)
        out = np.take(out, np.minimum(low + 1, size - 1), axis=axis)
        out -= below
        out *= weight
        out += below
    return out


def _same_grid(first: Grid, second: Grid) -> bool:
    """Same shape, and affines equal within 1e-6 (what `_resample` leaves as it is)."""
    return first.shape == second.shape and np.allclose(first.affine, second.affine, atol=1e-6)
