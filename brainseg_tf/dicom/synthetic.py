"""Writing an in-memory `Image` as a synthetic DICOM MR series, for tests, demos and round trips.

The series carries made-up patient and study attributes (``Synthetic^Subject``), never real ones.
Slices are the image's third axis; each slice's pixels are ``array[:, :, k].T`` (rows along the
image's second axis, columns along its first), placed by the image's affine converted to LPS. The
image's first two axes must be orthogonal (DICOM's row and column directions are); the third may
point either way along their normal. Values are stored as uint16 with a rescale slope and intercept;
`SyntheticSeries.image` holds the values the files encode (the input, quantised).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainseg_tf.dicom.geometry import LPS_TO_RAS
from brainseg_tf.io import Image

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UINT16_MAX = 65535


@dataclass(frozen=True, eq=False)
class SyntheticSeries:
    """What `write_series` wrote: the files (by instance number) and the image they encode."""

    paths: tuple[Path, ...]
    image: Image
    series_uid: str


def write_series(
    image: Image,
    folder: str | Path,
    series_number: int = 1,
    description: str = "T1 MPRAGE SAG",
    multiframe: bool = False,
    reverse_instances: bool = False,
    seed: str = "brainseg-tf",
) -> SyntheticSeries:
    """Write ``image`` as an MR series of single-frame files (``slice-0001.dcm`` ...) or one enhanced multi-frame file.

    Args:
        image: a 3D image whose first two voxel axes are orthogonal.
        folder: created if missing.
        series_number: SeriesNumber.
        description: SeriesDescription.
        multiframe: one Legacy Converted Enhanced MR file (highdicom) instead of one file per slice.
        reverse_instances: number the instances from the last slice to the first.
        seed: makes the UIDs reproducible (same seed and series number, same UIDs).

    Raises:
        ValueError: not 3D, or the first two axes are not orthogonal.
    """
    if image.array.ndim != 3:
        raise ValueError(f"Expected a 3D image. Received: shape={image.array.shape}")
    lps = LPS_TO_RAS @ image.affine
    columns, rows = lps[:3, 0], lps[:3, 1]
    if abs(columns @ rows) > 1e-6 * np.linalg.norm(columns) * np.linalg.norm(rows):
        raise ValueError("Expected an image whose first two voxel axes are orthogonal (DICOM rows and columns). Received: a sheared affine")
    stored, slope, intercept = _quantise(image.array)
    encoded = Image((stored.astype(np.float64) * slope + intercept).astype(np.float32), image.affine)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study = _common(seed, series_number, description)
    slices = [_slice(study, lps, stored[:, :, k], k, slope, intercept) for k in range(stored.shape[2])]
    count = len(slices)
    for k, dataset in enumerate(slices):
        dataset.InstanceNumber = count - k if reverse_instances else k + 1
        dataset.SOPInstanceUID = _uid(seed, series_number, "instance", k)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if multiframe:
        paths = (_write_multiframe(slices, folder, seed, series_number),)
    else:
        paths = tuple(_save(d, folder / f"slice-{int(d.InstanceNumber):04d}.dcm") for d in sorted(slices, key=lambda d: int(d.InstanceNumber)))
    return SyntheticSeries(paths, encoded, str(study.SeriesInstanceUID))


def _quantise(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 stored values, slope and intercept (short decimals, so they survive DICOM's text encoding)."""
    values = np.asarray(array, dtype=np.float64)
    if np.array_equal(values, np.round(values)) and values.min() >= 0 and values.max() <= UINT16_MAX:
        return values.astype(np.uint16), 1.0, 0.0
    intercept = float(np.floor(values.min()))
    span = float(values.max()) - intercept
    slope = float(f"{span / 60000:.4g}") if span > 0 else 1.0
    stored = np.clip(np.round((values - intercept) / slope), 0, UINT16_MAX)
    return stored.astype(np.uint16), slope, intercept


def _uid(seed: str, series_number: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[seed, str(series_number), *map(str, parts)])


def _common(seed: str, series_number: int, description: str):
    from pydicom.dataset import Dataset

    today = datetime.date(2020, 1, 1).strftime("%Y%m%d")
    dataset = Dataset()
    dataset.PatientName = "Synthetic^Subject"
    dataset.PatientID = "SYNTHETIC-0001"
    dataset.PatientBirthDate = "19700101"
    dataset.PatientSex = "O"
    dataset.StudyInstanceUID = _uid(seed, 0, "study")
    dataset.StudyID = "1"
    dataset.AccessionNumber = "SYNTH0001"
    dataset.StudyDate = dataset.SeriesDate = dataset.ContentDate = today
    dataset.StudyTime = dataset.SeriesTime = dataset.ContentTime = "120000"
    dataset.ReferringPhysicianName = ""
    dataset.SeriesInstanceUID = _uid(seed, series_number, "series")
    dataset.FrameOfReferenceUID = _uid(seed, 0, "frame-of-reference")
    dataset.SeriesNumber = series_number
    dataset.SeriesDescription = description
    dataset.Modality = "MR"
    dataset.Manufacturer = "brainseg-tf synthetic"
    dataset.PositionReferenceIndicator = ""
    dataset.BodyPartExamined = "HEAD"
    dataset.PatientPosition = "HFS"
    return dataset


def _slice(common, lps: np.ndarray, pixels: np.ndarray, k: int, slope: float, intercept: float):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = Dataset()
    dataset.update(common)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = MR_IMAGE_STORAGE
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    dataset.AcquisitionNumber = 1
    dataset.ImagePositionPatient = [_ds(v) for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
    columns, rows, step = (lps[:3, a] for a in range(3))
    dataset.ImageOrientationPatient = [_ds(v) for v in (*columns / np.linalg.norm(columns), *rows / np.linalg.norm(rows))]
    dataset.PixelSpacing = [_ds(np.linalg.norm(rows)), _ds(np.linalg.norm(columns))]
    dataset.SliceThickness = _ds(np.linalg.norm(step))
    dataset.SpacingBetweenSlices = _ds(np.linalg.norm(step))
    dataset.ScanningSequence, dataset.SequenceVariant, dataset.ScanOptions = "GR", "SP", ""
    dataset.MRAcquisitionType = "3D"
    dataset.EchoTime, dataset.RepetitionTime, dataset.EchoNumbers = 3.0, 2300.0, 1
    dataset.MagneticFieldStrength = 3.0
    dataset.ImagedNucleus = "1H"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = int(pixels.shape[1]), int(pixels.shape[0])
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.RescaleSlope, dataset.RescaleIntercept, dataset.RescaleType = _ds(slope), _ds(intercept), "US"
    dataset.WindowCenter, dataset.WindowWidth = _ds(slope * UINT16_MAX / 2 + intercept), _ds(slope * UINT16_MAX)
    dataset.PixelData = np.ascontiguousarray(pixels.T).tobytes()
    return dataset


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters keeping as many digits as fit."""
    value = float(value)
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1e}"


def _save(dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def _write_multiframe(slices: list, folder: Path, seed: str, series_number: int) -> Path:
    import highdicom as hd

    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=slices,
        series_instance_uid=str(slices[0].SeriesInstanceUID),
        series_number=series_number,
        sop_instance_uid=_uid(seed, series_number, "multiframe"),
        instance_number=1,
    )
    enhanced.SeriesDescription = slices[0].SeriesDescription
    return _save(enhanced, folder / "multiframe.dcm")
