"""DICOM inputs through `python -m inference` and the plugins' shared run: a nested DICOM tree among NIfTI
files, the same label map as the NIfTI route, a DICOM SEG on request, refusals one line each, and no
patient identifier in logs or in the outputs other than the SEG."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_dicom_series import GEOMETRIES, head_image

from brainseg_tf.dicom import find_series, load_series, read_seg
from brainseg_tf.dicom.synthetic import write_series
from brainseg_tf.geometry import reorient
from brainseg_tf.io import Image, load_label_map, save_volume
from brainseg_tf.labels import TISSUE

ROOT = Path(__file__).resolve().parents[1]
PATIENT_MARKERS = ("Synthetic", "SYNTHETIC-0001", "SYNTH0001", "Doe^John", "MRN12345")
"""The synthetic patient's name, ID and accession number, and a PACS-style folder name: never in logs or non-DICOM outputs."""
PACS_FOLDER = Path("pacs") / "Doe^John-MRN12345" / "brain study"


def stand_in_segmenter(settings=None):
    """A segmenter whose 'network' bins the normalised centre slice into the four tissue classes: fast and deterministic."""
    from brainseg_tf.preprocessing import InputSpec, Preprocessing, SliceReader
    from inference.heads import Network, SoftmaxHead
    from inference.inferers import SliceInferer
    from inference.predict import SliceSpec
    from inference.segmenter import Segmenter

    def predict(batch: np.ndarray) -> np.ndarray:
        classes = np.digitize(batch[..., batch.shape[-1] // 2], [0.05, 0.35, 0.7])
        return (np.eye(4, dtype=np.float32)[classes] * 0.9 + 0.025).astype(np.float32)

    network = Network(predict, SliceInferer(SliceSpec(2, 1, 8, 4), batch_size=4, workers=1), ROOT / "stand-in")
    spec = InputSpec(Preprocessing(1.0, 0.5, 99.5), SliceReader(2, 1), 8)
    return Segmenter(SoftmaxHead((network,), workers=1), TISSUE, spec, *([settings] if settings is not None else []))


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch):
    import inference.cli as cli
    import inference.segmenter as segmenter_module

    segmenter = stand_in_segmenter()
    monkeypatch.setattr(cli.Segmenter, "from_bundle", classmethod(lambda cls, path, settings=None: stand_in_segmenter(settings)))
    monkeypatch.setattr(segmenter_module.Segmenter, "from_bundle", classmethod(lambda cls, path, settings=None: stand_in_segmenter(settings)))
    return segmenter


def _tree(root: Path, geometry: str = "reversed-slices") -> tuple[Path, Path]:
    """root/nifti/head.nii.gz and the same voxels as a T1 series (and a FLAIR one) under a PACS-style folder."""
    image = head_image(GEOMETRIES[geometry])
    written = write_series(image, root / PACS_FOLDER / "t1", series_number=3, reverse_instances=True)
    write_series(image, root / PACS_FOLDER / "flair", series_number=4, description="AX FLAIR", multiframe=True)
    (root / "nifti").mkdir(parents=True)
    save_volume(written.image, root / "nifti" / "head.nii.gz")
    return root / PACS_FOLDER / "t1", root / "nifti" / "head.nii.gz"


def _key(folder: Path) -> tuple[str, str]:
    [series] = find_series(folder)
    return series.key, series.stem


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _assert_no_identifiers(texts: list[str], folder: Path) -> None:
    for text in texts:
        assert not any(marker in text for marker in PATIENT_MARKERS), text
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.endswith(".dcm"):
            data = path.read_bytes()
            data = gzip.decompress(data) if path.name.endswith(".gz") else data
            assert not any(marker.encode() in data for marker in PATIENT_MARKERS), path


def test_the_cli_segments_a_nested_dicom_tree_among_nifti_files_like_the_nifti_route(
    stand_in, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    from inference.cli import main

    t1, nifti = _tree(tmp_path / "in")
    key, stem = _key(t1)
    caplog.set_level("INFO")
    assert main([str(tmp_path / "in"), "--model", "stand-in", "--output-dir", str(tmp_path / "out"), "--dicom-seg"]) == 0

    out_t1 = tmp_path / "out" / PACS_FOLDER / "t1"
    assert sorted(p.name for p in out_t1.iterdir()) == sorted(f"{stem}_{s}" for s in ("labels.nii.gz", "qc.png", "seg.dcm", "volumes.csv", "volumes.json"))
    dicom_labels, nifti_labels = load_label_map(out_t1 / f"{stem}_labels.nii.gz"), load_label_map(tmp_path / "out" / "nifti" / "head_labels.nii.gz")
    assert len(np.unique(nifti_labels.array)) == 4
    assert np.array_equal(reorient(dicom_labels)[0].array, reorient(nifti_labels)[0].array)  # 0 voxels differ
    source = load_series(find_series(t1)[0])
    assert np.array_equal(TISSUE.to_values(read_seg(out_t1 / f"{stem}_seg.dcm", source.image).array), dicom_labels.array)
    assert json.loads((out_t1 / f"{stem}_volumes.json").read_text())["shape"] == list(source.image.shape)

    log = caplog.text + "".join(capsys.readouterr())
    assert key in log and "FLAIR contrast" in log
    _assert_no_identifiers([log], tmp_path / "out")
    assert pydicom.dcmread(out_t1 / f"{stem}_seg.dcm").PatientID == "SYNTHETIC-0001"  # identifiers in the DICOM output only


@pytest.mark.parametrize("accept", [False, True])
def test_a_series_described_as_another_contrast_is_flagged_unless_accepted(stand_in, tmp_path: Path, accept: bool) -> None:
    from inference.cli import main

    _tree(tmp_path / "in")
    [flair] = [s for s in find_series(tmp_path / "in") if s.number == 4]
    argv = [str(tmp_path / "in"), "--model", "stand-in", "--output-dir", str(tmp_path / "out")] + ["--accept-named-contrast"] * accept
    assert main(argv) == 0
    qc = json.loads((tmp_path / "out" / PACS_FOLDER / "flair" / f"{flair.stem}_volumes.json").read_text())["qc"]
    codes = [reason["code"] for reason in qc["reasons"]]
    assert ("non_t1_contrast" in codes) is not accept
    if not accept:
        assert qc["status"] == "warn" and qc["score"] == 0.0


def test_dicom_seg_is_written_only_on_request_and_dicom_discovery_can_be_turned_off(stand_in, tmp_path: Path) -> None:
    from inference.cli import main

    _tree(tmp_path / "in")
    assert main([str(tmp_path / "in"), "--model", "stand-in", "--output-dir", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").rglob("*_labels.nii.gz"))) == 3 and not list((tmp_path / "out").rglob("*.dcm"))
    assert main([str(tmp_path / "in"), "--model", "stand-in", "--output-dir", str(tmp_path / "only-nifti"), "--no-dicom"]) == 0
    assert [p.name for p in (tmp_path / "only-nifti").rglob("*_labels.nii.gz")] == ["head_labels.nii.gz"]


def test_a_refused_series_fails_alone_in_one_line_naming_its_key(stand_in, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from inference.cli import main

    _tree(tmp_path / "in")
    ct = write_series(head_image(GEOMETRIES["ras-like"]), tmp_path / "in" / PACS_FOLDER / "ct", series_number=9)
    for path in ct.paths:
        dataset = pydicom.dcmread(path)
        dataset.Modality = "CT"
        dataset.save_as(path, enforce_file_format=True)
    key, stem = _key(tmp_path / "in" / PACS_FOLDER / "ct")
    assert main([str(tmp_path / "in"), "--model", "stand-in", "--output-dir", str(tmp_path / "out"), "--dicom-seg"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"{key}: modality CT; expected MR"]
    assert not (tmp_path / "out" / PACS_FOLDER / "ct").exists()
    assert len(list((tmp_path / "out").rglob("*_seg.dcm"))) == 2  # the others went on


def test_the_plugin_run_takes_a_read_only_dicom_tree_and_writes_the_seg_beside_the_outputs(
    stand_in, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from inference.plugin import build_parser, run_plugin

    t1, _ = _tree(tmp_path / "in", geometry="oblique")
    key, stem = _key(t1)
    _read_only(tmp_path / "in")
    try:
        options = build_parser("test").parse_args(["--dicom-seg", "--no-qc"])
        assert run_plugin(options, tmp_path / "in", tmp_path / "out", ROOT / "models" / "tissue-multiclass", "test") == 0
    finally:
        for path in [tmp_path / "in", *(tmp_path / "in").rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    out_t1 = tmp_path / "out" / PACS_FOLDER / "t1"
    assert sorted(p.name for p in out_t1.iterdir()) == sorted(f"{stem}_{s}" for s in ("labels.nii.gz", "seg.dcm", "volumes.csv", "volumes.json"))
    stdout = capsys.readouterr().out
    assert "1 input volume(s), 2 DICOM series" in stdout and key in stdout
    _assert_no_identifiers([stdout], tmp_path / "out")
    assert os.access(tmp_path / "in", os.W_OK)


def test_an_image_the_segmenter_refuses_is_named_by_the_series_key(stand_in, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from inference.cli import main

    flat = Image(np.full((24, 20, 16), 100.0, np.float32), GEOMETRIES["ras-like"])  # no contrast to normalise
    write_series(flat, tmp_path / "in" / "flat", series_number=2)
    key, _ = _key(tmp_path / "in")
    assert main([str(tmp_path / "in"), "--model", "stand-in", "--output-dir", str(tmp_path / "out")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{key}: ") and line.count(key) == 1


@pytest.mark.slow
def test_the_mni152_head_as_a_dicom_series_goes_through_the_plugin_to_the_nifti_routes_labels_and_a_seg(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The embedded head (MNI152 T1) as single-frame DICOM, stored head to foot, next to the same voxels as NIfTI:
    the multi-class plugin gives both the same label map (0 voxels differ), and the SEG reads back to it."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    mni = Image(np.asarray(template.dataobj, np.float32), template.affine)
    flipped = Image(np.ascontiguousarray(mni.array[:, :, ::-1]), mni.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, mni.shape[2] - 1], [0, 0, 0, 1]]))
    written = write_series(flipped, tmp_path / "in" / PACS_FOLDER / "t1", series_number=5)
    (tmp_path / "in" / "nifti").mkdir()
    save_volume(written.image, tmp_path / "in" / "nifti" / "mni152.nii.gz")
    key, stem = _key(tmp_path / "in" / PACS_FOLDER)
    _read_only(tmp_path / "in")

    plugin = pytest.importorskip("brainseg_multiclass")  # the plugin as `make` installs it
    try:
        assert plugin.main(plugin.parser.parse_args(["--dicom-seg"]), str(tmp_path / "in"), str(tmp_path / "out")) == 0
    finally:
        for path in [tmp_path / "in", *(tmp_path / "in").rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    out = tmp_path / "out" / PACS_FOLDER / "t1"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}_{s}" for s in ("labels.nii.gz", "qc.png", "seg.dcm", "volumes.csv", "volumes.json"))
    dicom_labels, nifti_labels = load_label_map(out / f"{stem}_labels.nii.gz"), load_label_map(tmp_path / "out" / "nifti" / "mni152_labels.nii.gz")
    assert np.array_equal(reorient(dicom_labels)[0].array, reorient(nifti_labels)[0].array)  # 0 voxels differ
    counts = np.bincount(dicom_labels.array.ravel(), minlength=4)
    assert 1000 < counts[1:].sum() / 1000 < 2000  # an adult brain, in mL
    source = load_series(find_series(tmp_path / "in" / PACS_FOLDER)[0])
    assert np.array_equal(TISSUE.to_values(read_seg(out / f"{stem}_seg.dcm", source.image).array), dicom_labels.array)
    stdout = capsys.readouterr().out
    assert key in stdout
    _assert_no_identifiers([stdout], tmp_path / "out")
