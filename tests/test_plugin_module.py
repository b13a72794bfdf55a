"""The plugin modules as Python sees them: importing sets nothing, inputs found through PathMapper, the console script's environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.errors import BundleError
from brainseg_tf.io import Volume, save_volume
from brainseg_tf.labels import TISSUE
from toy_volumes import toy_brain
import inference.plugin
from inference.plugin import OUTPUT_FORMATS, build_parser, find_inputs, run_plugin

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLUGIN_MODULES = ("inference.plugin", "brainseg_multiclass", "brainseg_ensemble")

IMPORT_PROBE = """
import json, os, sys
before = dict(os.environ)
import {module}
after = dict(os.environ)
print(json.dumps({{
    "changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)),
    "imported": sorted(m for m in ("tensorflow", "keras", "matplotlib") if m in sys.modules),
}}))
"""


def _volume(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_volume(Volume(toy_brain(0), np.eye(4)), path)  # a brain the committed bundles accept


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _bare_environment(home: Path) -> dict[str, str]:
    """What ChRIS leaves a plugin: PATH and a HOME it cannot use (root writes anywhere, so a missing one stands for it)."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home)}


# --- importing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", PLUGIN_MODULES)
def test_importing_changes_no_environment_variable_and_imports_neither_tensorflow_nor_matplotlib(module: str, tmp_path: Path) -> None:
    home = tmp_path / "missing-home"
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)], env=_bare_environment(home),
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"changed": [], "imported": []}
    assert done.stderr == "" and not home.exists()


def test_the_parser_offers_the_formats_the_outputs_accept() -> None:
    from inference.outputs import OUTPUT_FORMATS as WRITTEN  # imports matplotlib: only here, not in the plugin module

    assert OUTPUT_FORMATS == WRITTEN


# --- finding inputs ---------------------------------------------------------------------------------


def test_inputs_are_found_once_each_sorted_without_hidden_ones_and_mirrored(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    for name in ("b/d/e.mgz", "a.nii.gz", "b/c.nii", ".hidden/f.nii.gz", "b/.g.nii.gz", "notes.txt", "dir.nii/x.txt"):
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_text("x")
    found = find_inputs(inputs, out, " **/*.nii.gz, **/*.nii ,**/*.mgz,**/*,")
    assert found == [
        (inputs / "a.nii.gz", out),
        (inputs / "b" / "c.nii", out / "b"),
        (inputs / "b" / "d" / "e.mgz", out / "b" / "d"),
        (inputs / "dir.nii" / "x.txt", out / "dir.nii"),
        (inputs / "notes.txt", out),
    ]
    assert not out.exists()  # output folders are made by whoever writes into them


@pytest.mark.parametrize("pattern", ["**/*.mgz", "", " , ", "*.nii.gz"])
def test_no_match_is_an_empty_list(tmp_path: Path, pattern: str) -> None:
    _volume(tmp_path / "in" / "deep" / "a.nii.gz")
    assert find_inputs(tmp_path / "in", tmp_path / "out", pattern) == []


def test_a_missing_input_folder_fails_the_run_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    options = build_parser("test").parse_args([])
    assert run_plugin(options, tmp_path / "absent", tmp_path / "out", ROOT / "models" / "tissue-multiclass", "test") == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"Not a directory: {tmp_path / 'absent'}"]


class _FailingModel:
    """Stands in for a segmenter whose network breaks its contract on every input."""

    family = "multiclass"
    label_set = TISSUE

    @classmethod
    def from_bundle(cls, path: Path, settings: object = None) -> _FailingModel:
        return cls()

    def segment_file(self, *args: object, **kwargs: object) -> None:
        raise BundleError("models/broken", "network output has shape (1, 2); expected (1, 16, 16, 16, 4)")


def test_a_model_failing_mid_run_stops_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference.plugin, "Segmenter", _FailingModel)
    for name in ("a.nii", "b/c.nii"):
        _volume(tmp_path / "in" / name)
    options = build_parser("test").parse_args(["--no-qc"])
    assert run_plugin(options, tmp_path / "in", tmp_path / "out", tmp_path / "broken", "test") == 1
    assert capsys.readouterr().err.strip().splitlines() == ["models/broken: network output has shape (1, 2); expected (1, 16, 16, 16, 4)"]
    assert _files(tmp_path / "out") == []


# --- the console scripts, as a process ---------------------------------------------------------------


def test_the_environment_is_prepared_before_matplotlib_is_imported(tmp_path: Path) -> None:
    """run_plugin imports matplotlib before it looks for inputs: a missing HOME must stay missing."""
    home = tmp_path / "missing-home"
    _volume(tmp_path / "in" / "a.nii")
    command = [str(BIN / "brainseg_multiclass"), "--pattern", "**/*.mgz", str(tmp_path / "in"), str(tmp_path / "out")]
    done = subprocess.run(command, env=_bare_environment(home), cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{tmp_path / 'in'}: no input matches --pattern '**/*.mgz'"]
    assert not home.exists() and _files(tmp_path / "out") == []


@pytest.mark.slow
@pytest.mark.parametrize("script", ["brainseg_multiclass", "brainseg_ensemble"])
def test_a_console_script_segments_with_a_missing_home_and_prints_only_its_log(script: str, tmp_path: Path) -> None:
    home = tmp_path / "missing-home"
    _volume(tmp_path / "in" / "site" / "a.nii.gz")
    command = [str(BIN / script), str(tmp_path / "in"), str(tmp_path / "out")]
    done = subprocess.run(command, env=_bare_environment(home), cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # no TensorFlow start-up notices, no matplotlib cache warning
    assert _files(tmp_path / "out") == ["site/a_labels.nii.gz", "site/a_qc.png", "site/a_volumes.csv", "site/a_volumes.json"]
    assert any("[1/1] site/a.nii.gz: " in line for line in done.stdout.splitlines())
    assert "summary: 1 of 1 file(s) segmented" in done.stdout
    assert not home.exists()
