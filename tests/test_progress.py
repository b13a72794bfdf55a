"""Progress bars of the entry points: drawn only on a terminal, advanced once per item; the library only reports."""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import evaluation.cli
import inference.cli
import training.cli
from brainseg_tf.config import load_config
from brainseg_tf.datasets import build_cache
from brainseg_tf.labels import TISSUE
from evaluation.compare import Case, Method, run_methods, score_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=[False, True], ids=["no-tty", "tty"])
def terminal(request: pytest.FixtureRequest) -> bool:
    """Whether stdout should claim to be a terminal; a test applies it with `_pretend`."""
    return request.param


def _pretend(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    """Make stdout a terminal or not: in the test's body, where capsys's own stdout (never a terminal) is in place."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Three tiny subjects (8x10x6 at 2 mm) with every tissue label, listed in a manifest."""
    rows = [["subject", "image", "label"]]
    for number in range(3):
        labels = np.zeros((8, 10, 6), np.int16)
        for value, start in zip(TISSUE.values[1:], (1, 3, 5)):
            labels[start : start + 2, 2:8, 1:5] = value
        image = (labels > 0) * 100.0 + np.random.default_rng(number).normal(0, 5, labels.shape) + 10
        image_path, label_path = tmp_path / f"s{number}_t1.nii.gz", tmp_path / f"s{number}_labels.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), image_path)
        nib.save(nib.Nifti1Image(labels.astype(np.int32), np.diag([2.0, 2.0, 2.0, 1.0])), label_path)
        rows.append([f"s{number}", image_path.name, label_path.name])
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _manifest_overrides(tmp_path: Path, manifest: Path) -> dict[str, object]:
    return {"data.source": "manifest", "data.manifest": str(manifest), "data.cache_dir": str(tmp_path / "cache"), "preprocess.voxel_size": 2.0}


# -- the library reports: once at the start, then once per item ---------------------------------------------------


def test_build_cache_reports_each_subject_once_and_nothing_when_reused(tmp_path: Path, manifest: Path) -> None:
    config = load_config(overrides=_manifest_overrides(tmp_path, manifest))
    calls: list[tuple[int, int]] = []
    build_cache(config, workers=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    calls.clear()
    build_cache(config, workers=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # reused: nothing built, no bar


def _case(tmp_path: Path, case_id: str, reference: np.ndarray) -> Case:
    return Case(case_id, "test", tmp_path / f"{case_id}.npz", reference.astype(np.uint8), (1.0, 1.0, 1.0))


def test_comparison_reports_each_method_and_each_label_map_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = np.zeros((8, 8, 8), np.uint8)
    reference[2:6, 2:6, 2:6] = np.array([1, 2, 3, 3])[:, None, None]  # one slab per class along I
    cases = [_case(tmp_path, "a", reference), _case(tmp_path, "b", reference)]
    methods = [Method("one", "baseline", "KMeansTissue"), Method("two", "baseline", "GaussianMixtureTissue")]

    def fake_run(method: Method, input_spec: object, cases: list[Case], folder: Path) -> dict:
        folder.mkdir(parents=True)
        labels = {}
        for case in cases:
            labels[case.case_id] = folder / f"{case.case_id}.npy"
            np.save(labels[case.case_id], case.reference)
        return {"labels": labels}

    monkeypatch.setattr("evaluation.compare.run_in_fresh_process", fake_run)
    calls: list[tuple[str, int, int]] = []
    runs = run_methods(methods, None, cases, tmp_path / "runs", lambda *call: calls.append(call))  # type: ignore[arg-type]
    scores = score_runs(methods, cases, runs, lambda *call: calls.append(call))
    assert calls == [("segmenting", n, 2) for n in range(3)] + [("scoring", n, 4) for n in range(5)]
    assert [(s["method"], s["case"]) for s in scores] == [("one", "a"), ("one", "b"), ("two", "a"), ("two", "b")]
    assert all(dice == 1.0 for s in scores for dice in s["dice"].values())


# -- the entry points draw the bars, on a terminal only ------------------------------------------------------------


class _FailingSegmenter:
    """Stands in for a loaded bundle: every input fails, so `segment_files` runs without a model."""

    family = "multiclass"
    label_set = TISSUE

    @classmethod
    def from_bundle(cls, path: Path, settings: object = None) -> _FailingSegmenter:
        return cls()

    def segment_file(self, path: Path, largest_component: bool = False, with_scores: bool = False) -> None:
        raise ValueError("no contrast")


def test_inference_bar_advances_once_per_input_and_only_on_a_terminal(
    terminal: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pretend(monkeypatch, terminal)
    monkeypatch.setattr(inference.cli, "Segmenter", _FailingSegmenter)
    monkeypatch.setattr(inference.cli, "import_tensorflow_quietly", lambda: None)
    monkeypatch.setattr(inference.cli, "use_cpu_budget", lambda threads: 1)
    bars, make_bar, positions, run_files = [], inference.cli.progress_bar, [], inference.cli.segment_files

    def recorded_bar(total: int):
        bars.append(make_bar(total))
        return bars[-1]

    def recorded_files(*args, on_result, **kwargs):
        return run_files(*args, on_result=lambda position, result: (positions.append(position), on_result(position, result)), **kwargs)

    monkeypatch.setattr(inference.cli, "progress_bar", recorded_bar)
    monkeypatch.setattr(inference.cli, "segment_files", recorded_files)
    inputs = [str(tmp_path / f"scan{n}.nii.gz") for n in range(3)]
    assert inference.cli.main(["--model", str(tmp_path), *inputs, "--output-dir", str(tmp_path / "out")]) == 1
    (bar,) = bars
    assert positions == [1, 2, 3] and bar.total == 3
    assert bar.n == (3 if terminal else 0)  # a disabled tqdm bar counts nothing
    err = capsys.readouterr().err
    assert ("segmenting: 100%" in err) is terminal
    assert [line.rsplit(": ", 1)[1] for line in err.splitlines()[-3:]] == ["no contrast"] * 3  # the summary, one line per failure


def test_prepare_data_bar_only_on_a_terminal(terminal: bool, tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _pretend(monkeypatch, terminal)
    monkeypatch.setattr(training.cli, "import_tensorflow_quietly", lambda: None)  # the build itself needs no TensorFlow
    overrides = [f"{key}={value}" for key, value in _manifest_overrides(tmp_path, manifest).items()]
    assert training.cli.main(["prepare-data", *(arg for item in overrides for arg in ("--set", item))]) == 0
    err = capsys.readouterr().err
    assert ("subjects: 100%" in err and "3/3" in err) is terminal


def test_comparison_bars_one_per_stage_only_on_a_terminal(terminal: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _pretend(monkeypatch, terminal)

    def fake_comparison(config: object, options: object, progress: evaluation.cli.StageBars) -> None:
        for stage, total in (("segmenting", 4), ("scoring", 8)):
            progress(stage, 0, total)
            bar = progress.bars[stage]
            assert bar.disable is not terminal  # drawn while its stage runs, on a terminal only
            for done in range(1, total + 1):
                progress(stage, done, total)
            assert bar.n == (total if terminal else 0) and bar.disable  # counted (a disabled bar counts nothing), then closed
        assert set(progress.bars) == {"segmenting", "scoring"}

    monkeypatch.setattr("evaluation.compare.run_comparison", fake_comparison)
    assert evaluation.cli.main(["compare", "--quick", "--doc", str(tmp_path / "c.md"), "--chart", str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err
    assert ("segmenting: 100%" in err and "scoring: 100%" in err and "8/8" in err) is terminal


def test_library_and_plugins_draw_no_bars() -> None:
    """tqdm belongs to the command lines; the library reports through callbacks, the ChRIS plugins log one line per file."""
    sources = [*ROOT.glob("brainseg_tf/**/*.py"), ROOT / "inference" / "plugin.py", ROOT / "inference" / "batch.py",
               ROOT / "evaluation" / "compare.py", *ROOT.glob("chris_plugins/**/*.py")]
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "tqdm" for name in imported), source
