"""A label map as a DICOM SEG referencing its source series (highdicom), and a SEG read back onto a grid (pydicom).

The SEG is a BINARY segmentation with one segment per foreground class: segment number = class
index, label = class name, SNOMED CT codes and colour from `brainseg_tf.dicom.segments`. Its frames
lie on the source slices (or frames), so PACS viewers overlay it on the series. Patient and study
attributes come from the source datasets: this file is the one output that carries them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from brainseg_tf.dicom.geometry import same_orientation, slice_index
from brainseg_tf.dicom.reading import LoadedSeries
from brainseg_tf.dicom.segments import segment_style
from brainseg_tf.errors import VolumeError
from brainseg_tf.io import LabelMap, Volume
from brainseg_tf.labels import LabelSet

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER_OFFSET = 1000
"""The SEG's SeriesNumber is the source's plus this (its own series, next to the source in PACS)."""
MANUFACTURER = "brainseg-tf"


def write_seg(
    labels: LabelMap, label_set: LabelSet, source: LoadedSeries, path: str | os.PathLike[str], algorithm: str = "brainseg-tf"
) -> Path:
    """Write class-index ``labels`` on ``source``'s grid as a DICOM SEG at ``path`` (atomically).

    Args:
        labels: class indices (0 = background) with the source image's shape and affine.
        label_set: names the classes; its foreground classes must be 1 .. num_classes - 1.
        source: the series the labels were computed from (`brainseg_tf.dicom.load_series`).
        path: the SEG file to write.
        algorithm: the algorithm's name in the SEG (e.g. the model bundle's name).

    Returns:
        The written path.

    Raises:
        ValueError: labels on another grid, or classes beyond the label set.
        VolumeError: the file system refused the write (nothing is left under ``path``).
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    _check_labels(labels, label_set, source)
    pixels = _frames(np.asarray(labels.array, dtype=np.uint8), source)
    seg = hd.seg.Segmentation(
        source_images=_source_images(source),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(label_set, algorithm),
        series_instance_uid=generate_uid(),
        series_number=(source.series.number or 0) + SEG_SERIES_NUMBER_OFFSET,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm[:64],
        software_versions=_version(),
        device_serial_number="0",
        content_label="BRAINSEG",
        content_description=f"{label_set.name} segmentation"[:64],
    )
    seg.SeriesDescription = f"brainseg-tf {label_set.name} segmentation"[:64]
    return _save_atomically(seg, Path(path))


def segment_descriptions(label_set: LabelSet, algorithm: str = "brainseg-tf") -> list:
    """One highdicom SegmentDescription per foreground class (segment number = class index)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(name=algorithm[:64], family=codes.DCM.ArtificialIntelligence, version=_version())
    descriptions = []
    for index in label_set.foreground_classes:
        style = segment_style(label_set.names[index], index, label_set.num_classes)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=index,
                segment_label=label_set.names[index][:64],
                segmented_property_category=getattr(codes.SCT, style.category_keyword),
                segmented_property_type=getattr(codes.SCT, style.type_keyword),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
                display_color=hd.color.CIELabColor.from_rgb(*style.rgb),
            )
        )
    return descriptions


def read_seg(path: str | os.PathLike[str], grid: Volume) -> LabelMap:
    """Read a BINARY DICOM SEG (pydicom only) back to a class-index label map on ``grid``'s (column, row, slice) grid.

    Each frame is placed on the grid slice whose first pixel is at its ImagePositionPatient; a
    pixel of segment n gets label n; frames the SEG omits (empty ones) stay background.

    Raises:
        VolumeError: not a SEG, another orientation or frame size, or a frame off the grid's slices.
    """
    import pydicom

    path = Path(path)
    seg = pydicom.dcmread(path)
    if seg.get("Modality") != "SEG":
        raise VolumeError(path, f"modality {seg.get('Modality')}; expected SEG")
    columns, rows, slices = grid.shape
    if (int(seg.Rows), int(seg.Columns)) != (rows, columns):
        raise VolumeError(path, f"frames of {seg.Rows}x{seg.Columns}; expected {rows}x{columns} (the grid's rows x columns)")
    frames = seg.pixel_array.reshape(-1, rows, columns)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    if not same_orientation(orientation, _grid_orientation(grid)):
        raise VolumeError(path, "frames in another orientation than the grid's slices")
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        k = slice_index(grid.affine, item.PlanePositionSequence[0].ImagePositionPatient)
        if k is None or not 0 <= k < slices:
            raise VolumeError(path, "a frame lies off the grid's slices")
        labels[:, :, k][frame.T > 0] = number
    return LabelMap(labels, grid.affine)


def _grid_orientation(grid: Volume) -> np.ndarray:
    from brainseg_tf.dicom.geometry import LPS_TO_RAS

    lps = LPS_TO_RAS @ grid.affine
    return np.concatenate([lps[:3, 0] / np.linalg.norm(lps[:3, 0]), lps[:3, 1] / np.linalg.norm(lps[:3, 1])])


def _check_labels(labels: LabelMap, label_set: LabelSet, source: LoadedSeries) -> None:
    if labels.shape != source.image.shape or not np.allclose(labels.affine, source.image.affine, atol=1e-4):
        raise ValueError(f"Expected labels on the source series' grid {source.image.shape}. Received: {labels.shape} (or another affine)")
    if tuple(label_set.foreground_classes) != tuple(range(1, label_set.num_classes)):
        raise ValueError(f"Expected foreground classes 1..{label_set.num_classes - 1}. Received: {label_set.foreground_classes}")
    if labels.array.size and (labels.array.min() < 0 or labels.array.max() >= label_set.num_classes):
        raise ValueError(f"Expected class indices 0..{label_set.num_classes - 1}. Received: {labels.array.min()}..{labels.array.max()}")


def _source_images(source: LoadedSeries) -> list:
    if source.multiframe:
        return [source.datasets[0]]
    return [source.datasets[plane.source] for plane in source.planes]


def _frames(labels: np.ndarray, source: LoadedSeries) -> np.ndarray:
    """SEG frames in the source images' order: slice k's labels as (rows, columns)."""
    frames = np.zeros((len(source.planes), labels.shape[1], labels.shape[0]), dtype=np.uint8)
    for k, plane in enumerate(source.planes):
        frames[plane.frame if source.multiframe else k] = labels[:, :, k].T
    return frames


def _version() -> str:
    import brainseg_tf

    return brainseg_tf.__version__


def _save_atomically(dataset, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(temporary, enforce_file_format=True)
        os.replace(temporary, path)
    except OSError as error:
        raise VolumeError(path, f"cannot write ({type(error).__name__})") from None
    finally:
        temporary.unlink(missing_ok=True)
    logger.debug("wrote %s", path.name)
    return path
