"""User datasets (manifest, FreeSurfer) and the HDF5 cache: build, reuse, rebuild, refuse."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from brainseg_tf.config import Config, load_config
from brainseg_tf.datasets import (
    SourceRecord,
    assign_splits,
    build_cache,
    discover_freesurfer,
    read_info,
    read_manifest,
    read_subjects,
)
from brainseg_tf.datasets import build as build_module
from brainseg_tf.errors import DatasetError, VolumeError
from brainseg_tf.labels import ASEG, STRUCTURES, TISSUE

LAS_2MM = np.array([[-2.0, 0, 0, 20], [0, 2.0, 0, -30], [0, 0, 2.0, -10], [0, 0, 0, 1]])


def _tiny_subject(rng: np.random.Generator, values: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A 12x14x10 head: a box of background with a blob of each stored label value."""
    labels = np.zeros((12, 14, 10), dtype=np.int16)
    for number, value in enumerate(values[1:]):
        start = 2 + 2 * number
        labels[start : start + 3, 3:11, 2:8] = value
    image = (labels > 0) * 100.0 + rng.normal(0, 5, labels.shape) + 10
    return image.astype(np.float32), labels


def _write_pair(folder: Path, name: str, image: np.ndarray, labels: np.ndarray, suffix: str = ".nii.gz") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / f"{name}_t1{suffix}", folder / f"{name}_labels{suffix}"
    make = nib.MGHImage if suffix == ".mgz" else nib.Nifti1Image
    nib.save(make(image, LAS_2MM), image_path)
    nib.save(make(labels.astype(np.int32), LAS_2MM), label_path)
    return image_path, label_path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for number in range(5):
        image, labels = _tiny_subject(rng, TISSUE.values)
        image_path, label_path = _write_pair(tmp_path / "data", f"s{number}", image, labels)
        rows.append({"subject": f"s{number}", "image": str(image_path.relative_to(tmp_path)), "label": str(label_path)})
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _config(tmp_path: Path, **data: object) -> Config:
    overrides = {"data.cache_dir": str(tmp_path / "cache"), "preprocess.voxel_size": 2.0}
    overrides.update({f"data.{k}": v for k, v in data.items()})
    return load_config(overrides=overrides)


def test_manifest_builds_a_cache_of_conformed_subjects(tmp_path: Path, manifest: Path) -> None:
    path = build_cache(_config(tmp_path, source="manifest", manifest=str(manifest)), workers=1)
    info = read_info(path)
    assert info.label_set == TISSUE
    assert sorted(sum(info.splits.values(), [])) == [f"s{n}" for n in range(5)]
    assert {split: len(ids) for split, ids in info.splits.items()} == {"train": 3, "val": 1, "test": 1}
    subject = read_subjects(path, "train")[0]
    assert subject.image.dtype == np.float32 and subject.classes.dtype == np.uint8
    assert 0.0 <= subject.image.min() and subject.image.max() <= 1.0
    assert nib.aff2axcodes(subject.affine) == ("R", "A", "S")
    assert set(np.unique(subject.classes)) == {0, 1, 2, 3}
    # LAS input flipped to RAS: stored i=2..3 (value 1) lands at 8..9 of 12, stored i=10..11 (empty) at 0..1.
    assert set(np.unique(subject.classes[8:10])) == {0, 1} and subject.classes[:2].max() == 0


def test_cache_is_reused_and_rebuilt_when_the_recipe_changes(tmp_path: Path, manifest: Path) -> None:
    config = _config(tmp_path, source="manifest", manifest=str(manifest))
    first = build_cache(config, workers=1)
    stamp = first.stat().st_mtime_ns
    assert build_cache(config, workers=1) == first and first.stat().st_mtime_ns == stamp
    changed = config.replace({"preprocess.upper_percentile": 99.0})
    assert build_cache(changed, workers=1) != first
    assert build_cache(config, rebuild=True, workers=1) == first and first.stat().st_mtime_ns != stamp


def test_a_failed_build_leaves_no_cache_file(tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = build_module.prepare_subject

    def fail_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise DatasetError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "prepare_subject", fail_on_third)
    with pytest.raises(DatasetError, match="simulated"):
        build_cache(_config(tmp_path, source="manifest", manifest=str(manifest)), workers=1)
    assert list((tmp_path / "cache").iterdir()) == []


def test_manifest_split_column_is_honoured(tmp_path: Path, manifest: Path) -> None:
    rows = list(csv.DictReader(manifest.open()))
    for row, split in zip(rows, ["test", "test", "", "val", "train"]):
        row["split"] = split
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "image", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    records = assign_splits(read_manifest(manifest), 0.2, 0.2, seed=0)
    assert [r.split for r in records] == ["test", "test", "train", "val", "train"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("subject,image\ns1,a.nii.gz\n", "lacks column"),
        ("subject,image,label\n", "no subjects"),
        ("subject,image,label\ns1,missing.nii.gz,missing_labels.nii.gz\n", "does not exist"),
        ("subject,image,label,split\ns1,{img},{lab},holdout\n", "split 'holdout'"),
        ("subject,image,label\nJohn Doe,{img},{lab}\n", "subject id"),
        ("subject,image,label\ns1,{img},{lab}\ns1,{img},{lab}\n", "more than once"),
    ],
)
def test_bad_manifests_are_refused_with_the_line(tmp_path: Path, content: str, message: str) -> None:
    image_path, label_path = _write_pair(tmp_path, "x", *_tiny_subject(np.random.default_rng(1), TISSUE.values))
    path = tmp_path / "bad.csv"
    path.write_text(content.format(img=image_path, lab=label_path))
    with pytest.raises(DatasetError, match=message) as error:
        read_manifest(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unknown_labels_error_or_background(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(2)
    image, labels = _tiny_subject(rng, (0, 1, 2, 7))  # 7 is not a tissue value
    image_path, label_path = _write_pair(tmp_path / "odd", "odd", image, labels)
    manifest.write_text(manifest.read_text() + f"odd,{image_path},{label_path}\n")
    with pytest.raises(DatasetError, match="odd.*7"):
        build_cache(_config(tmp_path, source="manifest", manifest=str(manifest)), workers=1)
    path = build_cache(_config(tmp_path, source="manifest", manifest=str(manifest), unknown_labels="background"), workers=1)
    odd = next(s for s in read_subjects(path) if s.subject_id == "odd")
    assert set(np.unique(odd.classes)) == {0, 1, 2}


def test_corrupt_user_volume_names_the_file(tmp_path: Path, manifest: Path) -> None:
    rows = list(csv.DictReader(manifest.open()))
    Path(rows[1]["label"]).write_bytes(b"not a volume at all")
    with pytest.raises(VolumeError, match=rows[1]["label"]):
        build_cache(_config(tmp_path, source="manifest", manifest=str(manifest)), workers=1)


def test_freesurfer_subjects_dir_imports_aseg(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    aseg_values = (0, 2, 3, 41, 42, 17)
    for name, image_name in [("bert", "norm.mgz"), ("ernie", "brain.mgz"), ("fsaverage", "norm.mgz")]:
        image, labels = _tiny_subject(rng, aseg_values)
        mri = tmp_path / "subjects" / name / "mri"
        mri.mkdir(parents=True)
        nib.save(nib.MGHImage(image, LAS_2MM), mri / image_name)
        nib.save(nib.MGHImage(labels.astype(np.int32), LAS_2MM), mri / "aseg.mgz")
    (tmp_path / "subjects" / "incomplete" / "mri").mkdir(parents=True)

    records = discover_freesurfer(tmp_path / "subjects")
    assert [(r.subject_id, r.image.name) for r in records] == [("bert", "norm.mgz"), ("ernie", "brain.mgz")]
    config = _config(tmp_path, source="freesurfer", subjects_dir=str(tmp_path / "subjects"), label_set="aseg", val_fraction=0.0, test_fraction=0.0)
    subjects = read_subjects(build_cache(config, workers=1))
    assert read_info(build_cache(config, workers=1)).label_set == ASEG
    expected = {ASEG.values.index(v) for v in aseg_values}
    assert all(set(np.unique(s.classes)) == expected for s in subjects)


def test_freesurfer_without_subjects_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no subject"):
        discover_freesurfer(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        discover_freesurfer(tmp_path / "absent")


def test_assign_splits_is_seeded_and_by_subject() -> None:
    records = [SourceRecord(f"s{n:02d}", Path("i"), Path("l")) for n in range(10)]
    first = assign_splits(records, 0.2, 0.1, seed=4)
    assert first == assign_splits(list(reversed(records)), 0.2, 0.1, seed=4)[::-1]
    assert [r.split for r in first].count("val") == 2 and [r.split for r in first].count("test") == 1
    with pytest.raises(DatasetError, match="val_fraction"):
        assign_splits(records, 0.6, 0.5, seed=0)


def test_foreign_cache_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format 99"):
        read_info(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        read_info(path)


def test_the_embedded_structures_cache_is_aligned_with_the_tissue_cache(tmp_path: Path) -> None:
    recipe = {"embedded.n_train": 2, "embedded.n_val": 1, "embedded.n_test": 1, "embedded.template_voxel_size": 4.0, "embedded.resampled_fraction": 0.0}
    tissue_path = build_cache(_config(tmp_path, **recipe), workers=1)
    structures_path = build_cache(_config(tmp_path, label_set="structures", **recipe), workers=1)
    assert structures_path != tissue_path and structures_path.name.startswith("embedded-structures-")
    assert read_info(structures_path).label_set == STRUCTURES and read_info(structures_path).splits == read_info(tissue_path).splits
    for tissue, structures in zip(read_subjects(tissue_path, "train"), read_subjects(structures_path, "train")):
        assert tissue.subject_id == structures.subject_id and np.array_equal(tissue.affine, structures.affine)
        inside = (structures.classes > 0).sum()
        assert ((structures.classes > 0) & (tissue.classes > 0)).sum() > 0.95 * inside  # the same warped brain
        assert structures.classes.max() > 3  # structure classes, not tissues


def test_the_embedded_dataset_refuses_another_label_set(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Expected label_set 'tissue' or 'structures'. Received: 'aseg'"):
        build_cache(_config(tmp_path, label_set="aseg"), workers=1)
