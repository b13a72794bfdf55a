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
