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


def _aseg_stats_rows(text: str) -> tuple[list[str], dict[str, float], list[list[str]]]:
    """(column headers, measures by name, table rows) of an aseg.stats text, read as asegstats2table reads it."""
    headers, measures, rows = [], {}, []
    for line in text.splitlines():
        if line.startswith("# ColHeaders"):
            headers = line.split()[2:]
        elif line.startswith("# Measure"):
            parts = [p.strip() for p in line[len("# Measure"):].split(",")]
            measures[parts[0]] = float(parts[3])
        elif line and not line.startswith("#"):
            rows.append(line.split())
    return headers, measures, rows


def test_freesurfer_label_sets_also_write_an_aseg_stats_table(tmp_path: Path) -> None:
    from brainseg_tf.labels import STRUCTURES

    assert outputs.writes_aseg_stats(STRUCTURES) and not outputs.writes_aseg_stats(TISSUE)
    image, segmentation = _segmentation(STRUCTURES)
    paths = output_paths("scan.nii.gz", tmp_path, OutputOptions(qc=False, aseg_stats=True))
    assert paths["aseg_stats"] == tmp_path / "scan_aseg.stats"
    write_outputs(image, segmentation, paths)
    text = paths["aseg_stats"].read_text()
    headers, measures, rows = _aseg_stats_rows(text)
    assert headers == ["Index", "SegId", "NVoxels", "Volume_mm3", "StructName", "normMean", "normStdDev", "normMin", "normMax", "normRange"]
    assert len(rows) == STRUCTURES.num_classes - 1 and f"# NRows {len(rows)}" in text
    voxel_mm3 = 0.9 * 1.1 * 3.0
    labels = segmentation.labels.array
    for row in rows:
        index, seg_id, voxels, volume, name = int(row[0]), int(row[1]), int(row[2]), float(row[3]), row[4]
        class_index = STRUCTURES.class_index(name)
        assert seg_id == STRUCTURES.values[class_index] and voxels == int((labels == class_index).sum())
        assert volume == pytest.approx(voxels * voxel_mm3, abs=0.06)
        if voxels:
            inside = image.array[labels == class_index]
            assert float(row[5]) == pytest.approx(inside.mean(), abs=1e-4) and float(row[8]) == pytest.approx(inside.max(), abs=1e-4)
    brain = (labels > 0).sum() * voxel_mm3
    ventricles = [STRUCTURES.class_index(n) for n in STRUCTURES.names if n.endswith(("Lateral-Ventricle", "Inf-Lat-Vent", "3rd-Ventricle", "4th-Ventricle", "CSF"))]
    assert len(ventricles) == 7
    assert measures["BrainSeg"] == pytest.approx(brain, rel=1e-6)
    assert measures["BrainSegNotVent"] == pytest.approx(brain - np.isin(labels, ventricles).sum() * voxel_mm3, rel=1e-6)
    assert "scan" not in text  # no input file name in the table


def test_the_qc_picture_takes_a_label_set_s_own_colours() -> None:
    from brainseg_tf.labels import STRUCTURES
    from brainseg_tf.visualize import OVERLAY_ALPHA, label_colormap

    cmap = label_colormap(STRUCTURES.num_classes, STRUCTURES.colors)
    hippocampus = STRUCTURES.class_index("Left-Hippocampus")
    assert cmap(0)[3] == 0 and cmap(hippocampus) == pytest.approx((220 / 255, 216 / 255, 20 / 255, OVERLAY_ALPHA))  # FreeSurfer's 17
    assert label_colormap(4)(1)[3] == OVERLAY_ALPHA  # no colours: matplotlib's
    with pytest.raises(ValueError, match="one colour per class \\(4\\). Received: 33 colours"):
        label_colormap(4, STRUCTURES.colors)
