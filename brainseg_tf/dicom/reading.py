"""Reading one DICOM MR series as an `Image`: single-frame slices or one enhanced (multi-frame) file.

Each slice or frame becomes a plane with its position, orientation, pixel spacing, rescale slope and
intercept and echo; the planes must make one evenly spaced 3D volume, else the series is refused
with one `SeriesError` line naming it by its key. The image is indexed (column, row, slice) with a
RAS+ affine (`brainseg_tf.dicom.geometry`); values are ``stored * RescaleSlope + RescaleIntercept``
as float32 (computed in float64, per slice or frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from brainseg_tf.dicom.geometry import same_orientation, stack_problem, stack_slices
from brainseg_tf.dicom.series import DicomSeries
from brainseg_tf.errors import SeriesError
from brainseg_tf.io import DEFAULT_MAX_VOXELS, Image

logger = logging.getLogger(__name__)

MIN_SLICES = 3
"""Fewer slices than this are not a 3D volume (a localiser, a single slice)."""
ACCEPTED_MODALITIES = ("MR",)


@dataclass(frozen=True)
class Plane:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file.

    Attributes:
        source: index of its dataset among the series' datasets.
        frame: its frame index in that dataset (0 for a single-frame file).
    """

    source: int
    frame: int
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray
    size: tuple[int, int]
    slope: float
    intercept: float
    echo: float | None
    localizer: bool
    thickness: float | None


@dataclass(frozen=True, eq=False)
class LoadedSeries:
    """A series read as an image, with what the DICOM outputs need to reference it.

    Attributes:
        series: the series as found on disk.
        image: float32 (column, row, slice) volume with its RAS+ affine.
        datasets: the series' datasets without pixel data (single-frame: in file order).
        planes: the plane of each slice k of ``image``, in slice order.
    """

    series: DicomSeries
    image: Image
    datasets: tuple
    planes: tuple[Plane, ...]

    @property
    def multiframe(self) -> bool:
        return len(self.datasets) == 1 and len(self.planes) > 1


def load_series(series: DicomSeries, max_voxels: int = DEFAULT_MAX_VOXELS) -> LoadedSeries:
    """Read a series' files and build its volume, refusing what is not one 3D MR volume.

    Refused: non-MR modalities; localisers; files mixing single- and multi-frame, or several
    multi-frame files; colour images; compressed transfer syntaxes without a decoder installed;
    several orientations or image sizes; several echoes; fewer than `MIN_SLICES` slices; repeated,
    missing or unevenly spaced slices; gantry tilt (stacking off the slice normal); voxel counts above
    ``max_voxels``.

    Raises:
        SeriesError: ``"<series key>: <problem>"``, one line.
    """
    import pydicom

    if series.modality not in ACCEPTED_MODALITIES:
        raise SeriesError(series.key, f"modality {series.modality or 'unknown'}; expected MR")
    try:
        datasets = [pydicom.dcmread(path) for path in series.files]
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as error:
        raise SeriesError(series.key, f"a file cannot be read ({type(error).__name__})") from None
    _check_datasets(series, datasets)
    planes = [plane for index, dataset in enumerate(datasets) for plane in _planes(series, index, dataset)]
    stack = _check_planes(series, planes, max_voxels)
    ordered = tuple(planes[i] for i in stack.order)
    array = _voxels(series, datasets, ordered)
    for dataset in datasets:
        if "PixelData" in dataset:
            del dataset.PixelData  # the outputs need the headers only
    logger.debug("%s: %d slices of %dx%d", series.key, len(ordered), *ordered[0].size)
    return LoadedSeries(series, Image(array, stack.affine), tuple(datasets), ordered)


def _check_datasets(series: DicomSeries, datasets: list) -> None:
    multiframe = [int(d.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in d for d in datasets]
    if any(multiframe) and len(datasets) > 1:
        raise SeriesError(series.key, f"{len(datasets)} files of which {sum(multiframe)} multi-frame; expected one multi-frame file or single-frame slices")
    modalities = {str(d.get("Modality", "")).upper() for d in datasets}
    if modalities != {"MR"}:
        raise SeriesError(series.key, f"modalities {sorted(modalities)}; expected MR only")
    for dataset in datasets:
        if "PixelData" not in dataset:
            raise SeriesError(series.key, "a file holds no pixel data; expected images")
        if int(dataset.get("SamplesPerPixel", 1)) != 1:
            raise SeriesError(series.key, f"colour images (SamplesPerPixel {dataset.SamplesPerPixel}); expected greyscale")
    _check_transfer_syntax(series, datasets)


def _check_transfer_syntax(series: DicomSeries, datasets: list) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    for syntax in sorted({str(d.file_meta.get("TransferSyntaxUID", "")) for d in datasets}):
        uid = UID(syntax)
        if not syntax or not uid.is_compressed:
            continue
        try:
            available = get_decoder(uid).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise SeriesError(series.key, f"compressed transfer syntax {uid.name} ({syntax}) and no decoder for it installed")


def _check_planes(series: DicomSeries, planes: list[Plane], max_voxels: int):
    if any(p.localizer for p in planes):
        raise SeriesError(series.key, "a localizer (ImageType LOCALIZER), not a 3D volume")
    orientations = [planes[0].orientation]
    for plane in planes[1:]:
        if not any(same_orientation(plane.orientation, o) for o in orientations):
            orientations.append(plane.orientation)
    if len(orientations) > 1:
        raise SeriesError(series.key, f"slices in {len(orientations)} orientations (a localizer or several planes?); expected one")
    sizes = {p.size for p in planes}
    if len(sizes) > 1:
        raise SeriesError(series.key, f"slices of {len(sizes)} sizes {sorted(sizes)}; expected one")
    if not all(np.allclose(p.spacing, planes[0].spacing, rtol=1e-4) for p in planes):
        raise SeriesError(series.key, "slices with different pixel spacings; expected one")
    echoes = {round(p.echo, 3) for p in planes if p.echo is not None}
    if len(echoes) > 1:
        raise SeriesError(series.key, f"{len(echoes)} echoes; expected one")
    if len(planes) < MIN_SLICES:
        raise SeriesError(series.key, f"{len(planes)} slice(s); expected a 3D volume of at least {MIN_SLICES}")
    positions = np.stack([p.position for p in planes])
    problem = stack_problem(planes[0].orientation, positions)
    if problem:
        raise SeriesError(series.key, problem)
    voxels = len(planes) * planes[0].size[0] * planes[0].size[1]
    if voxels > max_voxels:
        raise SeriesError(series.key, f"{voxels} voxels, above the limit of {max_voxels}")
    return stack_slices(planes[0].orientation, planes[0].spacing, positions, planes[0].thickness)


def _voxels(series: DicomSeries, datasets: list, planes: tuple[Plane, ...]) -> np.ndarray:
    """The (column, row, slice) float32 volume, each plane rescaled by its own slope and intercept."""
    rows, columns = planes[0].size
    array = np.empty((columns, rows, len(planes)), dtype=np.float32)
    try:
        pixels = [datasets[i].pixel_array for i in range(len(datasets))]
    except Exception as error:  # pydicom's decoders raise many types; the series fails alone, in one line
        raise SeriesError(series.key, f"pixel data cannot be decoded ({type(error).__name__})") from None
    for k, plane in enumerate(planes):
        stored = pixels[plane.source] if pixels[plane.source].ndim == 2 else pixels[plane.source][plane.frame]
        array[:, :, k] = (stored.astype(np.float64) * plane.slope + plane.intercept).T
    if not np.isfinite(array).all():
        raise SeriesError(series.key, "rescaled values are NaN or infinite")
    return array


def _planes(series: DicomSeries, index: int, dataset) -> list[Plane]:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in dataset:
        return [_frame_plane(series, index, dataset, f) for f in range(frames)]
    return [_single_frame_plane(series, index, dataset)]


def _single_frame_plane(series: DicomSeries, index: int, dataset) -> Plane:
    try:
        return Plane(
            index, 0,
            position=_floats(dataset.ImagePositionPatient, 3),
            orientation=_floats(dataset.ImageOrientationPatient, 6),
            spacing=_floats(dataset.PixelSpacing, 2),
            size=(int(dataset.Rows), int(dataset.Columns)),
            slope=float(dataset.get("RescaleSlope", 1.0) or 1.0),
            intercept=float(dataset.get("RescaleIntercept", 0.0) or 0.0),
            echo=_echo(dataset.get("EchoTime"), dataset.get("EchoNumbers")),
            localizer="LOCALIZER" in [str(v).upper() for v in dataset.get("ImageType", [])],
            thickness=float(dataset.SliceThickness) if dataset.get("SliceThickness") not in (None, "") else None,
        )
    except (AttributeError, ValueError, TypeError) as error:
        raise SeriesError(series.key, f"a slice lacks its geometry ({_missing(error)}); expected position, orientation and spacing") from None


def _frame_plane(series: DicomSeries, index: int, dataset, frame: int) -> Plane:
    try:
        measures = _group(dataset, frame, "PixelMeasuresSequence")
        transform = _group(dataset, frame, "PixelValueTransformationSequence")
        echo = _group(dataset, frame, "MREchoSequence")
        frame_type = _group(dataset, frame, "MRImageFrameTypeSequence")
        image_type = frame_type.get("FrameType", dataset.get("ImageType", [])) if frame_type is not None else dataset.get("ImageType", [])
        return Plane(
            index, frame,
            position=_floats(_group(dataset, frame, "PlanePositionSequence").ImagePositionPatient, 3),
            orientation=_floats(_group(dataset, frame, "PlaneOrientationSequence").ImageOrientationPatient, 6),
            spacing=_floats(measures.PixelSpacing, 2),
            size=(int(dataset.Rows), int(dataset.Columns)),
            slope=float(transform.get("RescaleSlope", 1.0)) if transform is not None else float(dataset.get("RescaleSlope", 1.0) or 1.0),
            intercept=float(transform.get("RescaleIntercept", 0.0)) if transform is not None else float(dataset.get("RescaleIntercept", 0.0) or 0.0),
            echo=_echo(echo.get("EffectiveEchoTime") if echo is not None else None, None),
            localizer="LOCALIZER" in [str(v).upper() for v in image_type],
            thickness=float(measures.SliceThickness) if measures.get("SliceThickness") not in (None, "") else None,
        )
    except (AttributeError, ValueError, TypeError) as error:
        raise SeriesError(series.key, f"frame {frame + 1} lacks its geometry ({_missing(error)}); expected position, orientation and spacing") from None


def _group(dataset, frame: int, name: str):
    """A functional group macro of one frame: its per-frame item, else the shared one, else None."""
    for groups, item in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        sequence = dataset.get(groups)
        if sequence is not None and len(sequence) > item and name in sequence[item] and len(sequence[item][name].value):
            return sequence[item][name].value[0]
    return None


def _floats(values, count: int) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    if array.shape != (count,) or not np.isfinite(array).all():
        raise ValueError(f"expected {count} finite numbers")
    return array


def _echo(echo_time, echo_number) -> float | None:
    if echo_time not in (None, ""):
        return float(echo_time)
    if echo_number not in (None, ""):
        first = echo_number if isinstance(echo_number, (str, int, float)) else list(echo_number)[0]
        return -float(first)  # an echo index where no echo time is given, kept apart from times
    return None


def _missing(error: BaseException) -> str:
    text = str(error)
    return text.split("'")[-2] if text.count("'") >= 2 else type(error).__name__
