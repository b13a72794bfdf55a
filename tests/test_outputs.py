"""Outputs of one segmented volume: names, formats, the volumes table, and all-or-nothing writing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg_tf.io import Volume, load_label_map
from brainseg_tf.labels import TISSUE, LabelSet
from inference import outputs
from inference.outputs import OutputOptions, output_paths, structure_volumes, write_outputs
from inference.segmenter import Segmentation

ANISOTROPIC = np.diag([0.9, 1.1, 3.0, 1.0])


def _segmentation(label_set: LabelSet = TISSUE, affine: np.ndarray = ANISOTROPIC) -> tuple[Volume, Segmentation]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, label_set.num_classes, size=(10, 12, 8)).astype(np.uint8)
    scores = np.eye(label_set.num_classes, dtype=np.float32)[labels]
    image = Volume(rng.random((10, 12, 8), dtype=np.float32), affine)
    return image, Segmentation(image.with_array(labels), image.with_array(scores), label_set, 0.1)


@pytest.mark.parametrize(
    ("name", "fmt", "labels_name"),
    [("t1.nii.gz", "same", "t1_labels.nii.gz"), ("T1.MGZ", "same", "T1_labels.mgz"), ("t1.nii", "mgz", "t1_labels.mgz"), ("a.b.mgz", "nii", "a.b_labels.nii")],
)
def test_output_names_follow_the_input(name: str, fmt: str, labels_name: str, tmp_path: Path) -> None:
    paths = output_paths(Path("in") / name, tmp_path, OutputOptions(fmt, qc=True, probabilities=True))
    assert paths["labels"] == tmp_path / labels_name
    stem = labels_name.rsplit("_labels", 1)[0]
    assert paths["volumes_csv"].name == f"{stem}_volumes.csv" and paths["qc"].name == f"{stem}_qc.png"
    assert paths["probabilities"].name == labels_name.replace("_labels", "_probabilities")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        OutputOptions("png")


def test_volumes_are_voxel_counts_times_voxel_volume() -> None:
    _, segmentation = _segmentation()
    volumes = structure_volumes(segmentation.labels, TISSUE)
    voxel_mm3 = 0.9 * 1.1 * 3.0
    assert [v.name for v in volumes] == ["CSF", "gray matter", "white matter"]
    for v in volumes:
        count = int((segmentation.labels.array == v.class_index).sum())
        assert v.voxels == count and v.volume_mm3 == pytest.approx(count * voxel_mm3)


def test_write_outputs_writes_every_output_and_the_tables_agree(tmp_path: Path) -> None:
    aseg = LabelSet("small-aseg", (0, 2, 41), ("Unknown", "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter"))
    image, segmentation = _segmentation(aseg)
    paths = output_paths("scan.nii.gz", tmp_path, OutputOptions(qc=True, probabilities=True))
    written = write_outputs(image, segmentation, paths, {"bundle": "test", "family": "multiclass"})
    assert sorted(written) == sorted(paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no leftovers
    stored = load_label_map(paths["labels"])
    assert np.array_equal(stored.array, aseg.to_values(segmentation.labels.array))  # stored values, not class indices
    assert np.allclose(stored.affine, ANISOTROPIC)
    rows = list(csv.DictReader(paths["volumes_csv"].open()))
    document = json.loads(paths["volumes_json"].read_text())
    assert [int(r["label"]) for r in rows] == [s["label"] for s in document["structures"]] == [2, 41]
    for row, structure in zip(rows, document["structures"]):
        assert float(row["volume_mm3"]) == pytest.approx(structure["volume_mm3"], abs=1e-3)
        assert int(row["voxels"]) == int((stored.array == structure["label"]).sum())
    assert document["model"] == {"bundle": "test", "family": "multiclass"}
    assert paths["qc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    probabilities = nib.load(paths["probabilities"])
    assert probabilities.shape == (10, 12, 8, 3) and np.allclose(probabilities.get_fdata(), segmentation.scores.array)


def test_probability_maps_of_a_segmentation_without_scores_are_refused_before_writing(tmp_path: Path) -> None:
    image, segmentation = _segmentation()
    labels_only = Segmentation(segmentation.labels, None, segmentation.label_set, segmentation.seconds)
    paths = output_paths("scan.nii.gz", tmp_path, OutputOptions(qc=False, probabilities=True))
    with pytest.raises(ValueError, match="with_scores=True"):
        write_outputs(image, labels_only, paths)
    assert list(tmp_path.iterdir()) == []
    assert write_outputs(image, labels_only, output_paths("scan.nii.gz", tmp_path, OutputOptions(qc=False)))  # labels alone are fine


def test_a_failing_output_leaves_no_file_of_the_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, segmentation = _segmentation()
    paths = output_paths("scan.mgz", tmp_path, OutputOptions(qc=True))

    def broken_picture(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "save_volume_overlays", broken_picture)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(image, segmentation, paths)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_rename_takes_back_the_files_already_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image, segmentation = _segmentation()
    paths = output_paths("scan.mgz", tmp_path, OutputOptions(qc=False))
    real_replace, calls = outputs.os.replace, []

    def replace_twice_then_fail(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError("no space left")
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", replace_twice_then_fail)
    with pytest.raises(OSError):
        write_outputs(image, segmentation, paths)
    assert list(tmp_path.iterdir()) == []
