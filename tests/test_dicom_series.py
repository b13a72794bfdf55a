"""DICOM series in: series the tests write themselves read back to the volume they encode, the NIfTI
route's voxel for voxel; dcm2niix agrees on the geometry; every refusal is one line naming the series' key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from brainseg_tf.dicom import find_series, is_dicom_file, load_series
from brainseg_tf.dicom.synthetic import write_series
from brainseg_tf.errors import SeriesError
from brainseg_tf.geometry import reorient
from brainseg_tf.io import Image, load_image, save_volume

SHAPE = (24, 20, 16)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.eye(4)
    a, b = [i for i in range(3) if i != axis]
    rotation[[a, a, b, b], [a, b, a, b]] = [np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)]
    return rotation


def _affine(sizes: tuple[float, float, float], axes: np.ndarray = np.eye(3), rotation: np.ndarray = np.eye(4)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = axes @ np.diag(sizes)
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(SHAPE) - 1) / 2 + np.array([1.5, -12.25, 20.0])
    return rotation @ affine


GEOMETRIES = {
    "ras-like": _affine((1.0, 1.0, 1.0)),
    "reversed-slices": _affine((1.0, 1.0, -1.0)),  # slices stacked head to foot: against the normal
    "1x1x3": _affine((1.0, 1.0, 3.0)),
    "sagittal-1x1x3": _affine((1.0, 1.0, 3.0), np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])),
    "oblique": _affine((0.9, 1.1, 1.2), rotation=_rotation(0, 17) @ _rotation(2, -9)),
}


def head_image(affine: np.ndarray, seed: int = 0) -> Image:
    """A small 'head': nested ellipsoids of distinct intensities plus seeded noise, on ``affine``'s grid."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"), axis=-1)
    radius = np.sqrt(((grid - [0.05, -0.1, 0.0]) ** 2 / [0.8, 0.9, 0.85]).sum(axis=-1))
    array = np.select([radius < 0.45, radius < 0.7, radius < 0.85, radius < 1.0], [900.0, 600.0, 250.0, 400.0], 10.0)
    return Image((array + rng.normal(0, 20, SHAPE)).astype(np.float32), affine)


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_a_series_reads_back_to_the_volume_it_encodes_as_the_nifti_route_does(geometry: str, multiframe: bool, tmp_path: Path) -> None:
    written = write_series(head_image(GEOMETRIES[geometry]), tmp_path / "dicom" / "t1", multiframe=multiframe, reverse_instances=True)
    save_volume(written.image, tmp_path / "t1.nii.gz")
    [series] = find_series(tmp_path / "dicom")
    loaded = load_series(series)
    assert loaded.multiframe == multiframe and len(series.files) == (1 if multiframe else SHAPE[2])

    dicom_ras, nifti_ras = reorient(loaded.image)[0], reorient(load_image(tmp_path / "t1.nii.gz"))[0]
    assert np.array_equal(dicom_ras.array, nifti_ras.array)  # 0 voxels differ
    np.testing.assert_allclose(dicom_ras.affine, nifti_ras.affine, atol=1e-4)
    np.testing.assert_allclose(dicom_ras.affine, reorient(written.image)[0].affine, atol=1e-6)
    if geometry != "reversed-slices":  # stored in the slice order the normal gives: same voxel order as written
        assert np.array_equal(loaded.image.array, written.image.array)


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    image = head_image(GEOMETRIES["ras-like"])
    written = write_series(Image(image.array * 0.37 - 55.5, image.affine), tmp_path / "s")
    header = pydicom.dcmread(written.paths[0], stop_before_pixels=True)
    assert float(header.RescaleSlope) != 1.0 and float(header.RescaleIntercept) != 0.0
    loaded = load_series(find_series(tmp_path)[0])
    assert loaded.image.array.min() < 0
    np.testing.assert_allclose(loaded.image.array, image.array * 0.37 - 55.5, atol=float(header.RescaleSlope))


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
@pytest.mark.parametrize("geometry", ["oblique", "reversed-slices", "sagittal-1x1x3"])
def test_dcm2niix_gives_the_same_geometry_to_a_thousandth_of_a_mm(geometry: str, multiframe: bool, tmp_path: Path) -> None:
    dcm2niix = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which("dcm2niix")
    if dcm2niix is None:
        pytest.skip("dcm2niix is not installed (the dev extra's PyPI wheel ships it)")
    write_series(head_image(GEOMETRIES[geometry]), tmp_path / "dicom", multiframe=multiframe)
    loaded = load_series(find_series(tmp_path / "dicom")[0])
    (tmp_path / "nifti").mkdir()
    done = subprocess.run([dcm2niix, "-z", "n", "-b", "n", "-f", "converted", "-o", str(tmp_path / "nifti"), str(tmp_path / "dicom")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    converted = nib.load(tmp_path / "nifti" / "converted.nii")
    theirs = reorient(Image(np.asarray(converted.dataobj, np.float32).squeeze(), converted.affine))[0]
    ours = reorient(loaded.image)[0]
    assert theirs.shape == ours.shape
    corners = np.array([[i, j, k, 1] for i in (0, ours.shape[0] - 1) for j in (0, ours.shape[1] - 1) for k in (0, ours.shape[2] - 1)]).T
    assert np.abs((theirs.affine @ corners) - (ours.affine @ corners)).max() < 1e-3  # every corner voxel's centre, in mm
    slope = float(pydicom.dcmread(next((tmp_path / "dicom").iterdir()), stop_before_pixels=True).get("RescaleSlope", 1.0))
    np.testing.assert_allclose(theirs.array, ours.array, atol=slope)  # dcm2niix may keep the stored integers and a scale


def test_series_are_found_by_content_anywhere_in_a_tree_and_grouped_by_uid(tmp_path: Path) -> None:
    image = head_image(GEOMETRIES["1x1x3"])
    write_series(image, tmp_path / "a" / "b" / "mixed", series_number=3)
    for path in write_series(image, tmp_path / "flair", series_number=4, description="AX FLAIR").paths:  # same folder, another series
        path.rename(tmp_path / "a" / "b" / "mixed" / f"flair-{path.name}")
    write_series(image, tmp_path / "c", series_number=5, multiframe=True)
    for path in (tmp_path / "a" / "b" / "mixed").glob("slice-000*.dcm"):  # no extension: found by content
        path.rename(path.with_name(path.stem + "-noext"))
    save_volume(image, tmp_path / "a" / "volume.nii.gz")
    (tmp_path / "notes.txt").write_text("not DICOM")
    write_series(image, tmp_path / ".hidden", series_number=6)

    found = find_series(tmp_path)
    assert [(s.number, len(s.files)) for s in found] == [(3, SHAPE[2]), (4, SHAPE[2]), (5, 1)]
    assert [s.folder for s in found] == [tmp_path / "a" / "b" / "mixed"] * 2 + [tmp_path / "c"]
    assert [s.contrast for s in found] == [None, "FLAIR", None]
    assert found[1].contrast_warning and "FLAIR" in found[1].contrast_warning
    assert found[0].key.startswith("series 3 #") and len(found[0].uid_hash) == 8 and found[0].stem == f"series-3-{found[0].uid_hash}"
    assert not is_dicom_file(tmp_path / "notes.txt") and not is_dicom_file(tmp_path / "missing")


# --- refusals: one line each, naming the series by its key, never the patient -----------------------------


def _rewrite(paths, change) -> None:
    for index, path in enumerate(paths):
        dataset = pydicom.dcmread(path)
        if change(index, dataset) is not False:
            dataset.save_as(path, enforce_file_format=True)


def _drop(paths, indices) -> None:
    for index in indices:
        Path(paths[index]).unlink()


def _set(keyword: str, value_of):
    def change(index: int, dataset) -> None:
        setattr(dataset, keyword, value_of(index, dataset))

    return change


def _compressed_without_decoder(paths) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, RLELossless, JPEGLossless

    missing = [uid for uid in (JPEGLossless, JPEGLosslessSV1, JPEGExtended12Bit, JPEGLSLossless, JPEG2000Lossless, RLELossless)
               if not get_decoder(uid).is_available]
    if not missing:
        pytest.skip("every compressed syntax tried has a decoder here")

    def change(index: int, dataset) -> None:
        dataset.file_meta.TransferSyntaxUID = missing[0]
        dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not decodable \xff\xd9 "])
        dataset["PixelData"].VR = "OB"

    _rewrite(paths, change)


REFUSALS = [
    ("ct", lambda p: _rewrite(p, _set("Modality", lambda i, d: "CT")), "modality CT; expected MR"),
    ("localizer", lambda p: _rewrite(p, _set("ImageType", lambda i, d: ["ORIGINAL", "PRIMARY", "LOCALIZER"])), "localizer"),
    ("three-planes", lambda p: _rewrite(p, _set("ImageOrientationPatient", lambda i, d: [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]][i % 3])),
     "3 orientations"),
    ("too-few", lambda p: _drop(p, range(2, len(p))), "2 slice(s); expected a 3D volume"),
    ("missing-slice", lambda p: _drop(p, [5]), "1 slice(s) missing"),
    ("uneven", lambda p: _rewrite(p, _set("ImagePositionPatient", lambda i, d: [*d.ImagePositionPatient[:2], float(d.ImagePositionPatient[2]) + 0.4 * (i == 7)])),
     "uneven slice spacing"),
    ("gantry-tilt", lambda p: _rewrite(p, _set("ImagePositionPatient", lambda i, d: [d.ImagePositionPatient[0], float(d.ImagePositionPatient[1]) + 0.3 * i, d.ImagePositionPatient[2]])),
     "off their normal"),
    ("two-echoes", lambda p: _rewrite(p, _set("EchoTime", lambda i, d: 3.0 if i % 2 else 9.5)), "2 echoes; expected one"),
    ("sizes", lambda p: _rewrite(p, lambda i, d: (setattr(d, "Rows", 10), setattr(d, "PixelData", d.PixelData[: 10 * 24 * 2])) if i == 3 else False),
     "2 sizes"),
    ("colour", lambda p: _rewrite(p, _set("SamplesPerPixel", lambda i, d: 3)), "colour images"),
    ("compressed", _compressed_without_decoder, "no decoder for it installed"),
]


@pytest.mark.parametrize(("spoil", "phrase"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_series_that_is_not_one_3d_mr_volume_is_refused_in_one_line_naming_its_key(spoil, phrase: str, tmp_path: Path) -> None:
    written = write_series(head_image(GEOMETRIES["ras-like"]), tmp_path / "series", series_number=12)
    spoil(list(written.paths))
    [series] = find_series(tmp_path)
    with pytest.raises(SeriesError) as caught:
        load_series(series)
    line = str(caught.value)
    assert line.startswith(f"series 12 #{series.uid_hash}: ") and phrase in line, line
    assert "\n" not in line and "Synthetic" not in line and "SYNTHETIC" not in line and str(tmp_path) not in line


def test_a_multi_frame_series_with_two_echoes_is_refused(tmp_path: Path) -> None:
    written = write_series(head_image(GEOMETRIES["ras-like"]), tmp_path, multiframe=True)
    dataset = pydicom.dcmread(written.paths[0])
    for index, frame in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        if "MREchoSequence" not in frame:
            frame.MREchoSequence = [pydicom.Dataset()]
        frame.MREchoSequence[0].EffectiveEchoTime = 2.0 + 5.0 * (index % 2)
    dataset.save_as(written.paths[0], enforce_file_format=True)
    with pytest.raises(SeriesError, match="2 echoes"):
        load_series(find_series(tmp_path)[0])


def test_a_voxel_count_above_the_limit_is_refused(tmp_path: Path) -> None:
    write_series(head_image(GEOMETRIES["ras-like"]), tmp_path)
    with pytest.raises(SeriesError, match="above the limit of 1000"):
        load_series(find_series(tmp_path)[0], max_voxels=1000)
