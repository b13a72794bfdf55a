"""Where samples come from: foreground-aware crop centres and zero-padded crops of in-memory subjects.

Axis conventions (volumes are RAS+, see `brainseg_tf.geometry`):

* Crops are centred on a voxel: output index ``t`` along an axis of size ``n`` reads volume
  position ``centre + t - n // 2``. Centres are given in volume coordinates (I, J, K).
* ``slices`` mode (2.5D): the sample spans ``slice_shape`` over the two in-plane axes, kept in
  ascending order as (H, W), and ``2 * context + 1`` slices along ``slice_axis``. The image is
  (H, W, C) with channels ordered from the lowest to the highest slice index; the labels are
  those of the centre slice, (H, W).
* ``patches`` mode (3D): ``patch_shape`` over (I, J, K); image (D, H, W, 1), labels (D, H, W).
* Whatever lies outside the volume reads as 0: image 0, labels 0 (background). This holds for
  context slices beyond the first or last slice too: they are zero, not edge-clamped, so an
  inference stack must zero-pad its context the same way.

In slices mode the sampler keeps its volumes with the slice axis first (a transposed copy when
``slice_axis`` is 1 or 2), so that a slab is read from contiguous memory: about ten times faster
than a strided read, for one extra copy of the volumes in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from brainseg_tf.config import GeneratorConfig
from brainseg_tf.crops import crop, crop_at
from brainseg_tf.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from brainseg_tf.datasets.cache import Subject

logger = logging.getLogger(__name__)

MAX_POINTS_PER_CLASS = 4096
"""Voxel positions kept per class and subject for foreground-aware centres (a random subsample)."""

Centre = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class ClassPoints:
    """Precomputed voxel positions of the foreground classes of one subject.

    Attributes:
        shape: the subject's volume shape (I, J, K).
        classes: foreground classes present in the subject, ascending.
        points: per present class, flat (C-order) voxel indices of up to `MAX_POINTS_PER_CLASS` voxels.
    """

    shape: tuple[int, int, int]
    classes: tuple[int, ...]
    points: tuple[np.ndarray, ...]


def check_generator_config(config: GeneratorConfig) -> None:
    """Check the sampling-related fields of a generator config.

    Raises:
        ConfigError: a field outside its accepted range, named in the message.
    """
    if config.mode not in ("slices", "patches"):
        raise ConfigError(f"Expected generator.mode in ['slices', 'patches']. Received: mode={config.mode!r}")
    if config.slice_axis not in (0, 1, 2) or isinstance(config.slice_axis, bool):
        raise ConfigError(f"Expected generator.slice_axis in [0, 1, 2]. Received: slice_axis={config.slice_axis!r}")
    if not isinstance(config.context, int) or config.context < 0:
        raise ConfigError(f"Expected generator.context >= 0. Received: context={config.context!r}")
    for name, shape, ndim in (("slice_shape", config.slice_shape, 2), ("patch_shape", config.patch_shape, 3)):
        if len(shape) != ndim or any(not isinstance(n, int) or n < 1 for n in shape):
            raise ConfigError(f"Expected generator.{name} as {ndim} positive integers. Received: {name}={shape!r}")
    if not 0.0 <= config.foreground_fraction <= 1.0:
        raise ConfigError(
            f"Expected generator.foreground_fraction in [0, 1]. Received: foreground_fraction={config.foreground_fraction!r}"
        )
    if not isinstance(config.seed, int) or config.seed < 0:
        raise ConfigError(f"Expected generator.seed as an integer >= 0. Received: seed={config.seed!r}")


def in_plane_axes(slice_axis: int) -> tuple[int, int]:
    """The two volume axes spanning a slice, ascending: they become the sample's (H, W)."""
    return tuple(axis for axis in range(3) if axis != slice_axis)  # type: ignore[return-value]


def sampling_axes(config: GeneratorConfig) -> tuple[int, int, int]:
    """Volume axis order the sampler stores volumes in: slice axis first for slices, (0, 1, 2) for patches."""
    return (config.slice_axis, *in_plane_axes(config.slice_axis)) if config.mode == "slices" else (0, 1, 2)


def box_shape(config: GeneratorConfig, *, labels: bool = False) -> tuple[int, int, int]:
    """Shape of the box read around a centre, in `sampling_axes` order.

    Args:
        config: generator settings.
        labels: in slices mode, the label box holds the centre slice only.
    """
    if config.mode == "patches":
        return tuple(config.patch_shape)  # type: ignore[return-value]
    return (1 if labels else 2 * config.context + 1, *config.slice_shape)  # type: ignore[return-value]


def index_classes(
    classes: np.ndarray, num_classes: int, rng: np.random.Generator, max_points: int = MAX_POINTS_PER_CLASS
) -> ClassPoints:
    """Collect up to `max_points` random voxel positions of each foreground class present.

    Args:
        classes: integer class map (I, J, K).
        num_classes: number of classes of the label set, background included.
        rng: source of the subsample (seed it for reproducible indices).
        max_points: positions kept per class.

    Raises:
        DatasetError: a class index is outside ``[0, num_classes)``.
    """
    flat = classes.ravel()
    counts = np.bincount(flat, minlength=num_classes)
    if counts.size > num_classes:
        raise DatasetError(f"Expected class indices below {num_classes}. Received: class {counts.size - 1}")
    order = np.argsort(flat, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    present, points = [], []
    for label in range(1, num_classes):
        members = order[bounds[label] : bounds[label + 1]]
        if members.size == 0:
            continue
        if members.size > max_points:
            members = np.sort(rng.choice(members, size=max_points, replace=False))
        present.append(label)
        points.append(np.ascontiguousarray(members, dtype=np.int64))
    return ClassPoints(shape=tuple(classes.shape), classes=tuple(present), points=tuple(points))  # type: ignore[arg-type]


def choose_centre(rng: np.random.Generator, points: ClassPoints, foreground_fraction: float, focus: tuple[int, ...] | None = None) -> Centre:
    """A crop centre: with probability `foreground_fraction` a voxel of a foreground class drawn evenly
    among those present (among the ``focus`` classes present, when given), otherwise (or when none is present)
    a uniformly random voxel."""
    chosen = [k for k, c in enumerate(points.classes) if focus is None or c in focus]
    if chosen and rng.random() < foreground_fraction:
        members = points.points[chosen[int(rng.integers(len(chosen)))]]
        flat = members[rng.integers(members.size)]
        return tuple(int(v) for v in np.unravel_index(flat, points.shape))  # type: ignore[return-value]
    return tuple(int(rng.integers(n)) for n in points.shape)  # type: ignore[return-value]


def resample_box(array: np.ndarray, centre: Sequence[int], size: Sequence[int], matrix: np.ndarray, order: int) -> np.ndarray:
    """Crop whose last ``ndim`` axes are resampled through a linear map; leading axes are read exactly.

    Output offset ``u`` over the last axes reads the volume at ``centre + matrix @ u`` there.
    Values outside the volume are 0.

    Args:
        array: 3D volume.
        centre: voxel the box is centred on.
        size: box shape.
        matrix: (ndim, ndim) map from output offsets to volume offsets, ndim = 2 or 3.
        order: 1 (linear, images) or 0 (nearest, labels).
    """
    ndim, leading = matrix.shape[0], len(size) - matrix.shape[0]
    coordinates = matrix.astype(np.float32) @ _box_offsets(tuple(size[leading:]))
    low = np.floor(coordinates.min(axis=1))
    coordinates = coordinates - low[:, None]  # >= 0; the extent is measured after the shift, rounding included
    extent = np.floor(coordinates.max(axis=1)).astype(int) + 2
    start, shape = [c - n // 2 for c, n in zip(centre, size)], list(size)
    for j in range(ndim):
        start[leading + j], shape[leading + j] = centre[leading + j] + int(low[j]), int(extent[j])
    values = _interpolate(crop_at(array, start, shape), ndim, coordinates, order)
    return values.reshape(tuple(size))


def _interpolate(region: np.ndarray, ndim: int, coordinates: np.ndarray, order: int) -> np.ndarray:
    """Sample the last `ndim` axes of `region` at `coordinates` (ndim, N), all inside; leading axes ride along."""
    spatial = region.shape[region.ndim - ndim :]
    table = region.reshape(-1, int(np.prod(spatial)))
    strides = [int(np.prod(spatial[i + 1 :])) for i in range(ndim)]
    if order == 0:
        return np.take(table, _flat_index(np.rint(coordinates).astype(np.intp), strides), axis=1)
    base = np.floor(coordinates)
    upper = coordinates - base
    lower = 1.0 - upper
    base_index = _flat_index(base.astype(np.intp), strides)
    out = np.zeros((table.shape[0], coordinates.shape[1]), dtype=np.float32)
    for corner in np.ndindex(*(2,) * ndim):
        weight = upper[0] if corner[0] else lower[0]
        for i in range(1, ndim):
            weight = weight * (upper[i] if corner[i] else lower[i])
        offset = sum(stride for stride, bit in zip(strides, corner) if bit)
        out += weight * np.take(table, base_index + offset, axis=1)
    return out


def _flat_index(index: np.ndarray, strides: Sequence[int]) -> np.ndarray:
    flat = index[0] * strides[0]
    for row, stride in zip(index[1:], strides[1:]):
        flat += row * stride
    return flat


@lru_cache(maxsize=16)
def _box_offsets(size: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) - n // 2 for n in size], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids])
    offsets.setflags(write=False)
    return offsets


class SubjectSampler:
    """Chooses subjects and crop centres, and reads crops in sample layout; holds per-subject class indices.

    Args:
        subjects: in-memory subjects (image float32, classes integer, same (I, J, K) shape).
        num_classes: classes of the label set, background included.
        config: generator settings (mode, shapes, context, foreground_fraction, seed).
        max_points: voxel positions kept per class and subject.

    Raises:
        DatasetError: no subject, or class indices outside the label set.
        ConfigError: invalid generator settings.
    """

    def __init__(
        self, subjects: Sequence[Subject], num_classes: int, config: GeneratorConfig, max_points: int = MAX_POINTS_PER_CLASS
    ) -> None:
        check_generator_config(config)
        if len(subjects) == 0:
            raise DatasetError("Expected at least one subject to sample from. Received: none")
        self.config = config
        self.subjects = tuple(subjects)
        self.class_points = tuple(
            _index_subject(subject, num_classes, np.random.default_rng([config.seed, number]), max_points)
            for number, subject in enumerate(self.subjects)
        )
        self.axes = sampling_axes(config)
        self.images = tuple(_to_sampling_layout(s.image, self.axes, np.float32) for s in self.subjects)
        self.classes = tuple(_to_sampling_layout(s.classes, self.axes, None) for s in self.subjects)
        self.image_shape, self.label_shape = box_shape(config), box_shape(config, labels=True)
        logger.debug("indexed %d subjects for %s sampling", len(self.subjects), config.mode)

    @property
    def spatial_ndim(self) -> int:
        """Axes that rotation and scale act on: 2 (in-plane) for slices, 3 for patches."""
        return 2 if self.config.mode == "slices" else 3

    def locate(self, rng: np.random.Generator, focus: tuple[int, ...] | None = None) -> tuple[int, Centre]:
        """Draw a subject (uniformly) and a crop centre in it, in volume coordinates (I, J, K); foreground centres
        among the ``focus`` classes when given (`choose_centre`)."""
        number = int(rng.integers(len(self.subjects)))
        return number, choose_centre(rng, self.class_points[number], self.config.foreground_fraction, focus)

    def extract(self, number: int, centre: Centre, matrix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read image and labels around `centre` of subject `number`, in sample layout.

        Args:
            number: subject position in `subjects`.
            centre: crop centre, volume coordinates (I, J, K).
            matrix: optional (ndim, ndim) output-to-volume map (rotation and scale) over the
                sample's spatial axes, (H, W) or (D, H, W); None reads an exact crop.

        Returns:
            image float32 (H, W, C) or (D, H, W, 1); labels of the volume's integer dtype, (H, W) or (D, H, W).
        """
        image, classes = self.images[number], self.classes[number]
        centre = tuple(centre[axis] for axis in self.axes)
        if matrix is None:
            image_box, label_box = crop(image, centre, self.image_shape), crop(classes, centre, self.label_shape)
        else:
            image_box = resample_box(image, centre, self.image_shape, matrix, order=1)
            label_box = resample_box(classes, centre, self.label_shape, matrix, order=0)
        if self.config.mode == "patches":
            return image_box[..., None], label_box
        return np.ascontiguousarray(np.moveaxis(image_box, 0, -1)), label_box[0]


def _to_sampling_layout(array: np.ndarray, axes: tuple[int, int, int], dtype: type | None) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(np.asarray(array, dtype=dtype), axes))


def _index_subject(subject: Subject, num_classes: int, rng: np.random.Generator, max_points: int) -> ClassPoints:
    try:
        return index_classes(np.asarray(subject.classes), num_classes, rng, max_points)
    except DatasetError as error:
        raise DatasetError(f"Subject {subject.subject_id}: {error}") from None
