"""Volume I/O: header checks before voxels, NIfTI and MGZ reading, atomic writing with clean headers.

Arrays are indexed (i, j, k) in the file's own voxel order; the 4x4 affine maps voxel
indices to RAS+ world millimetres (nibabel's convention). Orientation is fixed later,
by `brainseg_tf.geometry.conform`.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from brainseg_tf.config import PreprocessConfig
from brainseg_tf.errors import VolumeError

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".mgz")
GZIP_SUFFIXES = (".nii.gz", ".mgz")
DEFAULT_MAX_VOXELS: int = PreprocessConfig.max_voxels
"""The header check's voxel limit when a caller gives none: the config's (`PreprocessConfig.max_voxels`)."""
NIFTI1_HEADER_BYTES = 348
VolumeKind = Literal["image", "label"]
VOLUME_KINDS = ("image", "label")

# Errors nibabel and the codecs raise on unreadable bytes; mapped to VolumeError at the boundary.
_READ_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    OSError,
    ValueError,
)


@dataclass(frozen=True, eq=False)
class Volume:
    """A voxel array with the affine that places it in world space.

    Attributes:
        array: (I, J, K) or (I, J, K, C) array; float32 for images, integers for label maps.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix, float64.
    """

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Expected a 4x4 affine. Received: shape={affine.shape}")
        if not np.isfinite(affine).all():
            raise ValueError("Expected a finite affine. Received: an affine holding NaN or infinite values")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Expected a 3D or 4D (channels-last) array. Received: ndim={self.array.ndim}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (I, J, K)."""
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm along I, J, K."""
        return voxel_sizes(self.affine)

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid, and the same kind of volume, holding another array."""
        return type(self)(array, self.affine)


class Image(Volume):
    """An intensity volume (float): resampled by linear interpolation (`brainseg_tf.geometry.conform`)."""

    interpolation = "linear"


class LabelMap(Volume):
    """A volume of integer labels or classes: resampled by nearest neighbour only, never interpolated."""

    interpolation = "nearest"


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Column norms of the affine's 3x3 part: voxel edge lengths in mm."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def volume_suffix(path: str | os.PathLike[str]) -> str:
    """The supported suffix a path ends with (``.nii.gz``, ``.nii`` or ``.mgz``).

    Raises:
        VolumeError: the name ends with anything else.
    """
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise VolumeError(path, f"unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def check_header(path: str | os.PathLike[str], max_voxels: int = DEFAULT_MAX_VOXELS) -> nib.spatialimages.SpatialImage:
    """Validate a volume file from its header alone, before any voxel is read.

    Rejects: missing or empty files, unknown formats, unreadable headers, 2D images,
    4D images with more than one frame, non-finite or singular affines, voxel counts
    above ``max_voxels``, and uncompressed files shorter than their header promises.

    Returns:
        The nibabel image with its voxels not yet loaded (a proxy).

    Raises:
        VolumeError: naming the file and the problem.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if not path.is_file():
        raise VolumeError(path, "not a regular file" if path.exists() else "no such file")
    size = path.stat().st_size
    if size == 0:
        raise VolumeError(path, "file is empty")
    try:
        image = nib.load(path)
    except _READ_ERRORS as error:
        raise VolumeError(path, _unreadable_problem(path, suffix, size, error)) from None
    _check_shape(path, image.shape, max_voxels)
    _check_affine(path, image.affine)
    if suffix == ".nii":
        expected = int(image.header.get_data_offset()) + _data_bytes(image)
        if size < expected:
            raise VolumeError(path, f"truncated: header promises {expected} bytes, file has {size}")
    return image


def load_image(path: str | os.PathLike[str], max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """Load an intensity image as float32 after header checks.

    Raises:
        VolumeError: bad header (see `check_header`), unreadable or truncated voxel data,
            or non-finite voxel values.
    """
    image = check_header(path, max_voxels)
    data = _read_voxels(path, image, np.float32)
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise VolumeError(path, f"{bad} voxels are NaN or infinite")
    return Image(data, image.affine)


def load_label_map(path: str | os.PathLike[str], max_voxels: int = DEFAULT_MAX_VOXELS) -> LabelMap:
    """Load a label map as int32 after header checks; every stored value must be an integer.

    Raises:
        VolumeError: bad header, unreadable data, or non-integer / non-finite labels.
    """
    image = check_header(path, max_voxels)
    data = _read_voxels(path, image, None)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise VolumeError(path, "label map holds NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            raise VolumeError(path, "label map holds non-integer values; expected integer labels")
    if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
        raise VolumeError(path, "label values exceed the int32 range")
    return LabelMap(data.astype(np.int32), image.affine)


def save_volume(volume: Volume, path: str | os.PathLike[str], kind: VolumeKind = "image") -> Path:
    """Write a volume atomically (temporary name in the same folder, then rename).

    The header is built fresh from the array and affine: nothing of an input's header
    (``descrip``, ``db_name``, extensions) can leak into outputs. Label maps are stored
    as the smallest fitting integer type; images as float32.

    Returns:
        The final path.

    Raises:
        VolumeError: unsupported suffix, unknown ``kind``, non-integer label values,
            or the file system refused the write (the final path is then untouched).
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if kind not in VOLUME_KINDS:
        raise VolumeError(path, f"expected kind in {VOLUME_KINDS}, received kind={kind!r}")
    array = _storage_array(path, volume.array, kind)
    if suffix == ".mgz":
        image: nib.spatialimages.SpatialImage = nib.MGHImage(array, volume.affine)
    else:
        image = nib.Nifti1Image(array, volume.affine)
        image.set_qform(volume.affine, code=1)
        image.set_sform(volume.affine, code=1)
        image.header.set_xyzt_units("mm")
    temporary = path.with_name(f".{path.name[: -len(suffix)]}.part-{os.getpid()}{suffix}")
    try:
        nib.save(image, temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise VolumeError(path, f"cannot write ({_describe(error)})") from None
    finally:
        temporary.unlink(missing_ok=True)
    logger.debug("wrote %s", path)
    return path


def _storage_array(path: Path, array: np.ndarray, kind: VolumeKind) -> np.ndarray:
    if kind == "image":
        return np.asarray(array, dtype=np.float32)
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise VolumeError(path, f"label map holds non-integer values (dtype {array.dtype}); expected integer labels")
    if array.size == 0 or (array.min() >= 0 and array.max() <= 255):
        return np.asarray(array, dtype=np.uint8)
    if array.min() >= -(2**15) and array.max() < 2**15:
        return np.asarray(array, dtype=np.int16)
    return np.asarray(array, dtype=np.int32)


def _check_shape(path: Path, shape: tuple[int, ...], max_voxels: int) -> None:
    shape = tuple(int(n) for n in shape)
    if any(n < 1 for n in shape):
        raise VolumeError(path, f"header dimensions {shape} are not positive")
    if len(shape) < 3 or min(shape[:3]) <= 1:
        raise VolumeError(path, f"expected a 3D volume, received shape {shape} (2D input)")
    if len(shape) > 4:
        raise VolumeError(path, f"expected a 3D volume (or 4D with one frame), received {len(shape)}D shape {shape}")
    if len(shape) == 4 and shape[3] != 1:
        problem = f"expected a 3D volume (or 4D with one frame), received 4D with {shape[3]} frames {shape}"
        raise VolumeError(path, problem)
    count = int(np.prod(np.asarray(shape[:3], dtype=np.int64)))
    if count > max_voxels:
        raise VolumeError(path, f"header dimensions {shape} give {count} voxels, above the limit of {max_voxels}")


def _check_affine(path: Path, affine: np.ndarray | None) -> None:
    if affine is None or not np.isfinite(affine).all():
        raise VolumeError(path, "affine is missing or holds non-finite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise VolumeError(path, "affine is singular (zero voxel size or collapsed axes)")


def _data_bytes(image: nib.spatialimages.SpatialImage) -> int:
    return int(np.prod(image.shape, dtype=np.int64)) * image.get_data_dtype().itemsize


def _read_voxels(path: str | os.PathLike[str], image: nib.spatialimages.SpatialImage, dtype: type | None) -> np.ndarray:
    try:
        data = np.asanyarray(image.dataobj)
    except _READ_ERRORS as error:
        raise VolumeError(path, f"voxel data is truncated or corrupt ({_describe(error)})") from None
    if data.ndim == 4:
        data = data[..., 0]
    return np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)


def _unreadable_problem(path: Path, suffix: str, size: int, error: BaseException) -> str:
    """Why nibabel could not open a file: truncation when it can be told, else the error itself."""
    if suffix == ".nii" and size < NIFTI1_HEADER_BYTES:
        return f"truncated: {size} bytes, shorter than a NIfTI-1 header ({NIFTI1_HEADER_BYTES} bytes)"
    if suffix in GZIP_SUFFIXES and _gzip_ends_early(path):
        return "truncated: the compressed stream ends early"
    return f"not a readable {suffix} volume ({_describe(error)})"


def _gzip_ends_early(path: Path) -> bool:
    """True when ``path`` starts as gzip but its stream stops before the end marker."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except EOFError:
        return True
    except (OSError, zlib.error):
        return False
    return False


def _describe(error: BaseException) -> str:
    if isinstance(error, nib.filebasedimages.ImageFileError):
        return "unrecognised file format or bad magic bytes"
    if isinstance(error, EOFError):
        return "the compressed stream ends early"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__
