"""Peers side by side (`peers/`, `evaluation.peers`): tissue ordering, the peers' parent loop, the page, the command line.

No peer is installed here: the peers' child calls and our bundles are replaced by stand-ins that write the
references (or nothing), on one tiny head grown around a 2 mm brain.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg_tf.errors import BrainsegError
from brainseg_tf.scoring import dice_scores
from evaluation.cli import build_parser, main, peers_options
from evaluation.head_variants import HeadCase, brain_cases, write_case
from evaluation.heads_compare import Family
from evaluation.peers import (
    EXTRACTORS, PEERS_MARKERS, STAMP, TISSUE_METHODS, PeersOptions, compare_with_peers, ensure_peers_venv, parse_names, render_peers,
)  # fmt: skip
from peers import run_peers
from peers.tissue import dice, gmm_tissue, order_by_mean, score

ROOT = Path(__file__).resolve().parents[1]
CSF, GM, WM = 1, 2, 3


def tiny_brain():
    """An ellipsoid brain of TISSUE classes at 2 mm: white matter inside gray matter, a CSF ventricle."""
    from brainseg_tf.io import LabelMap

    radii = np.array([22.0, 25.0, 19.0])
    half = np.ceil((radii + 4.0) / 2.0).astype(int)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -half * 2.0
    offset = np.indices(2 * half + 1).astype(float) * 2.0 - (half * 2.0).reshape(3, 1, 1, 1)
    radius = np.sqrt(((offset / radii.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
    labels = np.zeros(offset.shape[1:], np.uint8)
    labels[radius <= 1.0], labels[radius <= 0.8], labels[radius <= 0.2] = GM, WM, CSF
    return LabelMap(labels, affine)


@pytest.fixture(scope="module")
def cases() -> list[HeadCase]:
    return list(brain_cases(tiny_brain(), subject_id="tiny", variants=("as-is",)))


# --- peers/tissue.py ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("means", [(10.0, 50.0, 90.0), (90.0, 10.0, 50.0), (50.0, 90.0, 10.0), (90.0, 50.0, 10.0)])
def test_clusters_are_numbered_by_mean_intensity(means: tuple[float, float, float]) -> None:
    clusters = np.repeat(np.arange(4), 5).reshape(4, 5)  # cluster 0 = outside, 1..3 with the given means
    image = np.concatenate([[0.0], means])[clusters]
    ordered = order_by_mean(clusters, image)
    expected = {cluster: 1 + sorted(means).index(mean) for cluster, mean in enumerate(means, start=1)}
    assert ordered.dtype == np.uint8 and (ordered[clusters == 0] == 0).all()
    assert all((ordered[clusters == c] == expected[c]).all() for c in (1, 2, 3))


def test_a_missing_cluster_sorts_last_and_bad_labels_are_refused() -> None:
    clusters, image = np.array([0, 2, 2, 3]), np.array([0.0, 80.0, 80.0, 20.0])
    assert order_by_mean(clusters, image).tolist() == [0, 2, 2, 1]
    with pytest.raises(ValueError, match="labels in 0..3"):
        order_by_mean(np.array([0, 4]), np.zeros(2))
    with pytest.raises(ValueError, match="one shape"):
        order_by_mean(np.zeros(3, int), np.zeros(4))


def test_the_mixture_finds_csf_gray_and_white_matter_inside_the_mask_only() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((24, 24, 24), np.uint8)
    truth[2:22, 2:22, 2:22] = WM
    truth[2:22, 2:22, 2:8] = GM
    truth[2:22, 2:6, 8:22] = CSF
    image = np.array([300.0, 30.0, 60.0, 100.0])[truth] + rng.normal(0, 4, truth.shape)  # bright scalp-like outside
    labels = gmm_tissue(image, truth > 0, seed=0)
    assert labels.dtype == np.uint8 and (labels[truth == 0] == 0).all()
    assert np.mean(labels[truth > 0] == truth[truth > 0]) > 0.99
    with pytest.raises(ValueError, match="at least 3 voxels"):
        gmm_tissue(image, np.zeros_like(truth))


def test_dice_and_scores_count_as_the_project_scoring_does() -> None:
    rng = np.random.default_rng(1)
    predicted, target = rng.integers(0, 4, (12, 12, 12)), rng.integers(0, 4, (12, 12, 12))
    ours = dice_scores(predicted, target, (1, 2, 3))
    assert all(dice(predicted == c, target == c) == pytest.approx(ours[c]) for c in (1, 2, 3))
    assert dice(np.zeros(4), np.zeros(4)) == 1.0
    scores = score(predicted > 0, target > 0, predicted, target)
    assert scores["gray matter"] == pytest.approx(ours[GM]) and score(target > 0, target > 0)["white matter"] is None


# --- peers/run_peers.py (the parent side, no peer installed) ---------------------------------------------


def test_the_peers_runner_imports_neither_brainseg_tf_nor_tensorflow() -> None:
    check = ("import sys, peers.run_peers; "
             "print([m for m in sys.modules if m.split('.')[0] in ('brainseg_tf', 'tensorflow', 'keras')])")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_ids_of_both_sides_agree() -> None:
    assert tuple(run_peers.EXTRACTORS) == EXTRACTORS and tuple(run_peers.TISSUE_METHODS) == TISSUE_METHODS
    assert set(run_peers.PACKAGES) == {*EXTRACTORS, *TISSUE_METHODS}


def test_cases_are_found_with_their_references(cases: list[HeadCase], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Received: none"):
        run_peers.find_cases(tmp_path)
    write_case(cases[0], tmp_path)
    found = run_peers.find_cases(tmp_path)
    assert list(found) == [cases[0].name] and found[cases[0].name]["tissue"].name == f"{cases[0].name}_tissue.nii.gz"
    found[cases[0].name]["brain"].unlink()
    with pytest.raises(FileNotFoundError, match="missing .*_brain.nii.gz"):
        run_peers.find_cases(tmp_path)


@pytest.mark.parametrize("text", ["deepbet,fsl", "deepbet,deepbet", " , "])
def test_the_peers_runner_refuses_bad_names(text: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_peers.parser.parse_args(["run", "--cases", str(tmp_path), "--output", "x.json", "--extractors", text])
    assert "Expected --extractors" in capsys.readouterr().err


def fake_call(truth: dict[str, Path], seconds: float):
    """A stand-in for `run_peers.run_call`: 'extracts' the reference brain, 'segments' the reference tissue."""

    def run_call(arguments: list[str], report_file: Path) -> dict:
        kind, name = arguments[0], arguments[1]
        reference = nib.load(truth["brain" if kind == "extract" else "tissue"])
        if name == "robex":
            return {"error": "exit status 1: ROBEX crashed", "wall_seconds": 0.5}
        nib.save(nib.Nifti1Image(np.asarray(reference.dataobj, np.uint8), reference.affine), arguments[-2])
        return {"import_seconds": 0.2, "load_seconds": 0.1, "seconds": seconds, "peak_rss_kib": 1000 * (2 if kind == "extract" else 3),
                "wall_seconds": seconds + 1.0, "error": None}

    return run_call


def test_each_pipeline_adds_its_calls_and_a_failure_is_a_row(cases: list[HeadCase], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_case(cases[0], tmp_path / "cases")
    monkeypatch.setattr(run_peers, "run_call", fake_call(files, 2.0))
    monkeypatch.setattr(run_peers, "installed", lambda package: None if package == "antspyx" else "1.0")
    results = run_peers.run_all(tmp_path / "cases", tmp_path / "out" / "peers.json", ["deepbet", "robex"], ["atropos", "gmm"])
    rows = {row["pipeline"]: row for row in results["rows"]}
    assert list(rows) == ["deepbet", "deepbet + Atropos", "deepbet + GMM", "ROBEX", "ROBEX + Atropos", "ROBEX + GMM"]
    assert rows["deepbet"]["dice"] == {"brain": 1.0, "CSF": None, "gray matter": None, "white matter": None}
    gmm = rows["deepbet + GMM"]
    assert gmm["dice"]["white matter"] == 1.0 and gmm["seconds"] == 4.0 and gmm["extractor_seconds"] == 2.0
    assert gmm["peak_rss_kib"] == 3000 and gmm["wall_seconds"] == 6.0 and gmm["load_seconds"] == pytest.approx(0.2)
    assert rows["deepbet + Atropos"]["error"] == "antspyx is not installed" and rows["deepbet + Atropos"]["dice"] is None
    assert rows["ROBEX"]["error"].startswith("exit status 1") and rows["ROBEX + GMM"]["error"] == "exit status 1: ROBEX crashed"
    saved = json.loads((tmp_path / "out" / "peers.json").read_text())
    assert saved["cases"] == [cases[0].name] and saved["versions"]["antspyx"] is None


# --- evaluation/peers.py: a whole run on stand-ins --------------------------------------------------------


def our_runner(truth: dict[str, np.ndarray]):
    def runner(family: Family, images: dict[str, str], folder: Path) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        outcomes, extraction = {}, {}
        for name in images:
            labels = truth[name] if family.bundle == "mc" else np.zeros_like(truth[name])
            np.save(folder / f"{name}.npy", labels)
            np.save(folder / f"{name}_brain.npy", (truth[name] > 0).astype(np.uint8))
            outcomes[name] = {"labels": str(folder / f"{name}.npy"), "seconds": 3.0, "qc": {"status": "pass", "reasons": []}, "brain": None}
            extraction[name] = {"seconds": 0.5, "mask": str(folder / f"{name}_brain.npy")}
        return {"outcomes": outcomes, "import_seconds": 4.0, "load_seconds": 1.0, "brain_extractor": family.bundle == "mc",
                "peak_rss_kib": 2048 * 1024, "extraction": extraction if family.bundle == "mc" else {}}

    return runner


def test_a_run_scores_ours_and_the_peers_on_the_same_cases_and_writes_the_page(cases: list[HeadCase], tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "comparison.md"
    page.write_text("# C\n\nhand-written\n")
    options = PeersOptions(n_heads=1, doc=page, output_dir=tmp_path / "out", command="python -m evaluation peers --heads 1")
    families = [Family("multi-class", "mc"), Family("ensemble", "ens")]
    monkeypatch.setattr(run_peers, "installed", lambda package: "1.0")

    def peers_runner(folder: Path, output: Path) -> dict:
        monkeypatch.setattr(run_peers, "run_call", fake_call(run_peers.find_cases(folder)[cases[0].name], 10.0))
        return run_peers.run_all(folder, output, ["deepbet", "robex"], ["gmm"])

    results = compare_with_peers(cases, families, options, peers_runner, runner=our_runner({cases[0].name: cases[0].tissue.array}))
    rows = {row["pipeline"]: row for row in results["rows"]}
    assert rows["multi-class"]["dice"]["gray matter"] == 1.0 and rows["multi-class"]["extractor_dice"] == 1.0
    assert rows["ensemble"]["dice"]["brain"] == 0.0 and rows["ensemble"]["extractor_seconds"] is None
    assert rows["multi-class"]["wall_seconds"] == 8.0 and rows["deepbet + GMM"]["kind"] == "peer" and rows["deepbet"]["kind"] == "peer extractor"
    assert rows["deepbet + GMM"]["variant"] == "as-is" and rows["ROBEX + GMM"]["error"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["peers"]["extractors"] == ["deepbet", "robex"] and len(saved["rows"]) == 6

    text = page.read_text()
    assert text.startswith("# C\n\nhand-written\n") and text.count(PEERS_MARKERS[0]) == 1 and text.rstrip().endswith(PEERS_MARKERS[1])
    assert "| multi-class | 1.000 | 1.000 | 1.000 | 1.000 | 3.0 | 8.0 | 2048 | 1 / 1 |" in text
    assert "| deepbet + GMM | 1.000 | 1.000 | 1.000 | 1.000 | 20.0 | 22.0 | 3 | 1 / 1 |" in text  # 3000 KiB: the larger call
    assert "| ROBEX + GMM | – | – | – | – | – | – | – | 0 / 1 |" in text
    assert "| multi-class: its `brain_extractor/` alone | 1.000 | 0.5 | 1 / 1 |" in text and "| deepbet | 1.000 | 10.0 | 1 / 1 |" in text
    assert "- ROBEX: exit status 1: ROBEX crashed" in text and "python -m evaluation peers --heads 1" in text


# --- the command line and the venv -------------------------------------------------------------------------


def test_the_subcommand_parses_into_options() -> None:
    options = peers_options(build_parser().parse_args(["peers", "--heads", "1", "--variants", "as-is, gamma 2", "--extractors", "robex,deepbet",
                                                       "--tissue", "gmm", "--no-install", "--venv", "/tmp/v"]))
    assert options.n_heads == 1 and options.variants == ("as-is", "gamma 2") and options.extractors == ("robex", "deepbet")
    assert options.tissue == ("gmm",) and options.install is False and options.venv == Path("/tmp/v")
    defaults = peers_options(build_parser().parse_args(["peers"]))
    assert defaults.n_heads == 2 and defaults.variants == ("as-is", "template brain") == PeersOptions().variants and defaults.extractors == EXTRACTORS and defaults.tissue == TISSUE_METHODS
    assert defaults.venv == Path("outputs/peers/venv") and defaults.output_dir == Path("outputs/peers") and defaults.install is True


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [(["--heads", "0"], "--heads N >= 1"), (["--seed", "-2"], "--seed >= 0"), (["--variants", "as-is,bogus"], "['bogus']"),
     (["--extractors", "deepbet,fsl"], "--extractors as distinct"), (["--extractors", "robex,robex"], "Received: robex, robex"),
     (["--tissue", " , "], "--tissue as distinct comma-separated names among atropos, gmm. Received: none")],
)  # fmt: skip
def test_bad_options_give_one_line_errors_before_anything_is_installed(arguments: list[str], expected: str, caplog: pytest.LogCaptureFixture,
                                                                      tmp_path: Path) -> None:
    with caplog.at_level(logging.ERROR):
        status = main(["peers", "--venv", str(tmp_path / "venv"), *arguments])
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert status == 1 and len(errors) == 1 and "\n" not in errors[0] and expected in errors[0], errors
    assert not (tmp_path / "venv").exists()
    with pytest.raises(BrainsegError, match="Expected --tissue"):
        parse_names("kmeans", TISSUE_METHODS, "--tissue")


def test_the_venv_is_reused_when_its_requirements_are_unchanged_and_never_made_without_install(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.3.5\n")
    with pytest.raises(BrainsegError, match="is missing"):
        ensure_peers_venv(tmp_path / "venv", requirements, install=False)
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    import hashlib

    (tmp_path / "venv" / STAMP).write_text(hashlib.sha256(requirements.read_bytes()).hexdigest() + "\n")
    assert ensure_peers_venv(tmp_path / "venv", requirements, install=False) == python  # no subprocess: nothing to install
    requirements.write_text("numpy==2.3.4\n")
    with pytest.raises(BrainsegError, match="other requirements"):
        ensure_peers_venv(tmp_path / "venv", requirements, install=False)


def test_render_gives_medians_over_heads_and_says_when_ours_has_no_extractor() -> None:
    def row(pipeline: str, kind: str, head: int, brain: float | None, seconds: float | None) -> dict:
        dice = None if brain is None else {"brain": brain, "CSF": 0.5, "gray matter": 0.8, "white matter": 0.9}
        return {"pipeline": pipeline, "kind": kind, "case": f"head0{head}-as-is", "variant": "as-is", "error": None if dice else "boom",
                "dice": dice, "seconds": seconds, "wall_seconds": 5.0, "peak_rss_kib": 1024 * 1024, "extractor_seconds": None,
                "extractor_dice": None if dice is None else brain}

    results = {
        "command": "python -m evaluation peers", "created": "2026-12-08 10:00 UTC", "seed": 0,
        "environment": {"versions": {"python": "3.11"}, "cpu_cores": 2, "machine": "Linux x86_64"},
        "cases": [{"variant": "as-is", "head": f"head0{h}"} for h in (0, 1)],
        "peers": {"versions": {"deepbet": "1.0.2", "antspyx": None}, "python": "3.11.7", "settings": {"robex": "seed 0"}},
        "rows": [row("A", "ours", 0, 0.90, 2.0), row("A", "ours", 1, 0.96, 4.0), row("deepbet + GMM", "peer", 0, 0.94, 9.0),
                 row("deepbet + GMM", "peer", 1, None, None)],
    }
    text = render_peers(results)
    assert text.startswith("_Generated by `python -m evaluation peers` on 2026-12-08 10:00 UTC")
    assert "| A | 0.930 | 0.500 | 0.800 | 0.900 | 3.0 | 5.0 | 1024 | 2 / 2 |" in text
    assert "| deepbet + GMM | 0.940 | 0.500 | 0.800 | 0.900 | 9.0 | 5.0 | 1024 | 1 / 2 |" in text
    assert "Neither bundle holds a brain extractor" in text and "- deepbet + GMM: boom" in text
    assert "deepbet 1.0.2, antspyx not installed" in text and "robex: seed 0" in text


def test_peaks_are_this_process_own_in_kib() -> None:
    import resource

    from evaluation.peers import own_peak_rss_kib

    carried = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # at least our own (Linux's counters differ by a few pages)
    assert 10_000 < own_peak_rss_kib() < 1.1 * carried and 10_000 < run_peers.peak_rss_kib()
