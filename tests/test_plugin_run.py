"""The plugins' shared library side, in-process: input patterns, environment, exit status."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.io import Volume, save_volume
from toy_volumes import toy_brain
from inference.plugin import DEFAULT_PATTERN, build_parser, bundle_path, prepare_environment, run_plugin

ROOT = Path(__file__).resolve().parents[1]


def _volume(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_volume(Volume(toy_brain(0), np.eye(4)), path)  # a brain the committed bundles accept


def test_default_pattern_finds_every_format_at_any_depth_once_and_skips_hidden(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.nii.gz", "b/c.nii", "b/d/e.mgz", ".hidden/f.nii.gz", "b/.g.nii.gz", "notes.txt"):
        _volume(inputs / name) if name.endswith(("gz", "nii")) else (inputs / name).write_text("x")
    options = build_parser("test").parse_args(["--no-qc", "--pattern", DEFAULT_PATTERN + ",**/*.nii"])
    assert run_plugin(options, inputs, out, ROOT / "models" / "tissue-multiclass", "test") == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*_labels.*")) == ["a_labels.nii.gz", "b/c_labels.nii", "b/d/e_labels.mgz"]


def test_no_matching_input_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    _volume(tmp_path / "in" / "a.nii")
    options = build_parser("test").parse_args(["--pattern", "**/*.mgz"])
    assert run_plugin(options, tmp_path / "in", tmp_path / "out", ROOT / "models" / "tissue-multiclass", "test") == 1
    assert "no input matches --pattern '**/*.mgz'" in capsys.readouterr().err
    assert not any((tmp_path / "out").rglob("*")) if (tmp_path / "out").exists() else True


def test_a_broken_bundle_fails_the_run_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _volume(tmp_path / "in" / "a.nii")
    options = build_parser("test").parse_args([])
    assert run_plugin(options, tmp_path / "in", tmp_path / "out", tmp_path / "no-bundle", "test") == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"{tmp_path / 'no-bundle'}: not a bundle folder (expected a folder with bundle.json and manifest.sha256)"]


def test_prepare_environment_replaces_unwritable_homes_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writable = tmp_path / "keras"
    writable.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "missing"))  # root may write anywhere: a missing folder stands for an unusable one
    monkeypatch.setenv("KERAS_HOME", str(writable))
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    prepare_environment()
    assert os.environ["KERAS_HOME"] == str(writable)
    home, mpl = Path(os.environ["HOME"]), Path(os.environ["MPLCONFIGDIR"])
    assert home != tmp_path / "missing" and os.access(home, os.W_OK) and mpl.parent == home


def test_bundles_come_from_the_models_folder_of_the_image_or_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAINSEG_MODELS_DIR", raising=False)
    assert bundle_path("tissue-ensemble") == ROOT / "models" / "tissue-ensemble"
    monkeypatch.setenv("BRAINSEG_MODELS_DIR", "/opt/brainseg/models")
    assert bundle_path("tissue-ensemble") == Path("/opt/brainseg/models/tissue-ensemble")
