"""`python -m training prepare-data`: the embedded dataset end to end, in the quick setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.config import QUICK_OVERRIDES, load_config
from brainseg_tf.datasets import build_cache, read_info, read_subjects
from training.cli import main

pytestmark = pytest.mark.slow


def test_embedded_cache_is_deterministic_across_worker_counts(tmp_path: Path) -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(tmp_path / "a")})
    serial = read_subjects(build_cache(config, workers=1))
    parallel = read_subjects(build_cache(config.replace({"data.cache_dir": str(tmp_path / "b")}), workers=2))
    assert [s.subject_id for s in serial] == [s.subject_id for s in parallel]
    for one, other in zip(serial, parallel):
        assert np.array_equal(one.image, other.image) and np.array_equal(one.classes, other.classes)
        assert np.array_equal(one.affine, other.affine) and one.split == other.split
    info = read_info(build_cache(config, workers=1))
    assert {split: len(ids) for split, ids in info.splits.items()} == {"train": 3, "val": 1, "test": 1}
    assert info.recipe["embedded"]["n_train"] == 3 and info.recipe["preprocess"]["voxel_size"] == 3.0


def test_prepare_data_writes_a_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preview = tmp_path / "preview.png"
    status = main(["prepare-data", "--quick", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--preview", str(preview)])
    assert status == 0
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 10_000
    assert len(list((tmp_path / "cache").glob("embedded-*.h5"))) == 1


def test_prepare_data_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "prepare-data", "--quick", "--set", "generator.batch_size=many"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "generator.batch_size" in result.stderr and "Traceback" not in result.stderr


def test_a_corrupt_user_volume_fails_in_one_line_from_worker_processes(tmp_path: Path) -> None:
    """Errors raised in the cache builder's worker processes reach the user as one line, no traceback."""
    import nibabel as nib

    rows = ["subject,image,label"]
    for number in range(3):
        labels = np.zeros((10, 12, 8), np.int16)
        labels[3:7, 3:9, 2:6] = 1 + number
        image_path, label_path = tmp_path / f"s{number}.nii.gz", tmp_path / f"s{number}_labels.nii.gz"
        nib.save(nib.Nifti1Image(labels.astype(np.float32) * 50 + 5, np.eye(4)), image_path)
        nib.save(nib.Nifti1Image(labels, np.eye(4)), label_path)
        rows.append(f"s{number},{image_path.name},{label_path.name}")
    broken = tmp_path / "s1.nii.gz"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "training", "prepare-data", "--set", "data.source=manifest",
         "--set", f"data.manifest={tmp_path / 'manifest.csv'}", "--set", f"data.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(broken) in errors[0] and "truncated" in errors[0]
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_config_command_prints_the_effective_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    override = tmp_path / "override.yaml"
    override.write_text("training:\n  epochs: 7\n")
    assert main(["config", "--config", str(override), "--set", "generator.batch_size=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["epochs"] == 7 and printed["generator"]["batch_size"] == 4
    assert load_config(overrides={"training.epochs": 7, "generator.batch_size": 4}).to_dict() == printed
