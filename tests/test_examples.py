"""Each plugin's ``examples/``: run on ``incoming`` as ChRIS runs it, the plugin writes what ``outgoing`` holds.

When the models or the inference change on purpose, regenerate the examples
(``.venv/bin/python -m chris_plugins.examples regenerate``) and commit them. CI also runs this module
inside each built image (``pytest tests/test_examples.py -k <plugin>``, see .github/workflows/ci.yml).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from chris_plugins.descriptors import PLUGINS, Plugin
from chris_plugins.examples import EXAMPLE_FILE, compare_outgoing, example_folder, relative_files, run_plugin

REPO = Path(__file__).resolve().parents[1]
PLUGINS_ROOT = REPO / "chris_plugins"  # not the installed package's folder: inside an image the checkout is mounted
MAX_EXAMPLE_BYTES = 1_000_000
IDS = [p.name for p in PLUGINS]


@pytest.mark.slow
@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_the_plugin_reproduces_its_outgoing_example(plugin: Plugin, tmp_path: Path) -> None:
    folder = example_folder(plugin, PLUGINS_ROOT)
    status = run_plugin(plugin.module, folder / "incoming", tmp_path / "outgoing")
    assert status == 0
    problems = compare_outgoing(folder / "outgoing", tmp_path / "outgoing")
    assert not problems, "\n".join(problems) + "\nif the change is intended: make examples (python -m chris_plugins.examples regenerate), then commit"


@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_the_examples_are_small_and_complete(plugin: Plugin) -> None:
    folder = example_folder(plugin, PLUGINS_ROOT)
    assert relative_files(folder / "incoming") == [EXAMPLE_FILE]
    stem = EXAMPLE_FILE.removesuffix(".nii.gz")
    assert {f"{stem}_labels.nii.gz", f"{stem}_volumes.csv", f"{stem}_volumes.json"} <= set(relative_files(folder / "outgoing"))
    for path in folder.rglob("*"):
        assert not path.is_file() or path.stat().st_size < MAX_EXAMPLE_BYTES, f"{path}: keep example files under 1 MB"
    readme = (PLUGINS_ROOT / plugin.name / "README.md").read_text()
    assert "## Examples" in readme and "python -m chris_plugins.examples regenerate" in readme


# --- compare_outgoing on tiny folders ------------------------------------------------------------------


def _write_outputs(folder: Path, labels: np.ndarray, seconds: float = 1.0, **extra: str) -> None:
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), folder / "x_labels.nii.gz")
    document = {"model": {"family": "multiclass"}, "seconds": seconds, "structures": [{"name": "CSF", "voxels": int(labels.sum())}]}
    (folder / "x_volumes.json").write_text(json.dumps(document))
    (folder / "x_volumes.csv").write_text(f"class,voxels,seconds\n1,{int(labels.sum())},{seconds}\n")
    for name, text in extra.items():
        (folder / name).write_text(text)


LABELS = np.zeros((4, 4, 4), np.uint8)
LABELS[1:3, 1:3, 1:3] = 1
FLIPPED = LABELS.copy()
FLIPPED[0, 0, 0] = 1


@pytest.mark.parametrize(
    ("actual", "extra", "expected_problem"),
    [
        (LABELS, {}, None),  # only the timings differ
        (FLIPPED, {}, "1 of 64 voxels differ"),
        (LABELS, {"x_qc.png": "not a picture"}, "unexpected ['x_qc.png']"),
    ],
    ids=["timings-ignored", "one-voxel-differs", "extra-file"],
)
def test_compare_outgoing_finds_what_differs(tmp_path: Path, actual: np.ndarray, extra: dict[str, str], expected_problem: str | None) -> None:
    _write_outputs(tmp_path / "expected", LABELS, seconds=1.0)
    _write_outputs(tmp_path / "actual", actual, seconds=2.5, **extra)
    problems = compare_outgoing(tmp_path / "expected", tmp_path / "actual")
    if expected_problem is None:
        assert problems == []
    else:
        assert any(expected_problem in p for p in problems), problems
