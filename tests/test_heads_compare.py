"""The realistic-heads comparison (`evaluation.heads_compare`): scores, QC counting, the page, the command line.

Stand-ins replace the bundles: a scripted segmenter returns given labels and QC verdicts (or refuses), on the
cases of one head grown around a tiny 2 mm brain (`brain_cases`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.errors import BrainsegError, ImageError
from brainseg_tf.io import Image, LabelMap
from brainseg_tf.labels import TISSUE
from evaluation.cli import build_parser, heads_options, main
from evaluation.head_variants import VARIANTS, HeadCase, brain_cases
from evaluation.heads_compare import (
    HEADS_MARKERS, Family, HeadsOptions, compare_on_cases, format_calibration, parse_variants, qc_calibration_rows, render_heads,
    run_family, run_in_fresh_process, score_labels,
)  # fmt: skip
from evaluation.report import BEGIN_MARKER, END_MARKER
from inference.qc import QcReason, QcVerdict
from inference.segmenter import Segmentation

CSF, GM, WM = 1, 2, 3
SUITE = ("as-is", "gamma 2", "T2-like", "noise", "empty")
PASS = QcVerdict(0.9, (), {"brain_volume_ml": 40.0, "structure": 0.8, "white_over_gray": 0.3})
CONTRAST = QcVerdict(0.0, (QcReason("contrast", "not T1-like"),), {"brain_volume_ml": 40.0, "structure": 0.8, "white_over_gray": -0.2})
NO_BRAIN = ImageError("no brain found (3 mL of brain, at least 100 mL expected): is this a head MRI?")


def tiny_brain() -> LabelMap:
    """An ellipsoid brain of TISSUE classes at 2 mm: white matter inside gray matter, a CSF ventricle."""
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
    return list(brain_cases(tiny_brain(), subject_id="tiny", variants=SUITE))


class ScriptedSegmenter:
    """Answers each `segment` call with the next planned (labels, verdict), or raises the planned error."""

    def __init__(self, plan: list[tuple[np.ndarray, QcVerdict] | Exception]) -> None:
        self.plan = list(plan)
        self.extractor = None

    def segment(self, image: Image) -> Segmentation:
        step = self.plan.pop(0)
        if isinstance(step, Exception):
            raise step
        labels, verdict = step
        assert labels.shape == image.shape
        return Segmentation(LabelMap(labels.astype(np.uint8), image.affine), None, TISSUE, 0.25, None, verdict)


def zero_segmenter(bundle: str) -> ScriptedSegmenter:
    """A picklable factory for the fresh-process test: empty labels, QC pass, for any number of calls."""
    segmenter = ScriptedSegmenter([])
    segmenter.segment = lambda image: Segmentation(LabelMap(np.zeros(image.shape, np.uint8), image.affine), None, TISSUE, 0.1, None, PASS)
    return segmenter


# --- scores ----------------------------------------------------------------------------------------------


def test_perfect_labels_score_dice_one_hd95_zero_and_no_volume_error(cases: list[HeadCase]) -> None:
    case = cases[0]
    scores = score_labels(case.tissue.array, case.tissue.array, case.brain_mask.array, (2.0, 2.0, 2.0))
    assert scores["dice"] == {"brain": 1.0, "CSF": 1.0, "gray matter": 1.0, "white matter": 1.0}
    assert scores["hd95_mm"] == {"brain": 0.0, "gray matter": 0.0, "white matter": 0.0}
    assert scores["brain_volume_error_pct"] == 0.0 and scores["brain_ml"] == pytest.approx(case.brain_mask.array.sum() * 8 / 1000)


def test_scores_of_a_known_error_use_the_voxel_sizes() -> None:
    tissue = np.zeros((20, 20, 20), np.uint8)
    tissue[5:15, 5:15, 5:15] = WM
    tissue[5:15, 5:15, 5:10] = GM  # brain: 1000 voxels, half gray, half white
    labels = tissue.copy()
    labels[5:15, 5:15, 15] = GM  # one slab of 100 extra voxels on top
    scores = score_labels(labels, tissue, tissue > 0, (1.0, 1.0, 3.0))
    assert scores["brain_volume_error_pct"] == pytest.approx(10.0)
    assert scores["brain_ml"] == pytest.approx(3.3) and scores["reference_brain_ml"] == pytest.approx(3.0)
    assert scores["dice"]["brain"] == pytest.approx(2000 / 2100) and scores["dice"]["white matter"] == 1.0
    assert scores["dice"]["gray matter"] == pytest.approx(1000 / 1100) and scores["dice"]["CSF"] == 1.0  # absent from both
    assert scores["hd95_mm"]["brain"] == pytest.approx(3.0)  # the top face moved one 3 mm voxel
    empty = score_labels(np.zeros_like(tissue), tissue, tissue > 0, (1.0, 1.0, 1.0))
    assert empty["brain_volume_error_pct"] == -100.0 and empty["dice"]["brain"] == 0.0 and np.isinf(empty["hd95_mm"]["white matter"])


# --- a whole run on stand-ins ------------------------------------------------------------------------------


def test_run_counts_flagged_and_missed_cases_a_refused_one_included(cases: list[HeadCase], tmp_path: Path) -> None:
    truth = {case.variant: case.tissue.array for case in cases}
    zeros = {variant: np.zeros_like(array) for variant, array in truth.items()}
    plans = {  # in SUITE order: as-is, gamma 2, T2-like, noise, empty
        "mc": [(truth["as-is"], PASS), (truth["gamma 2"], CONTRAST), (truth["T2-like"], CONTRAST), NO_BRAIN, (truth["empty"], PASS)],
        "ens": [(zeros[v], PASS) for v in SUITE],
    }
    families = [Family("multi-class (softmax U-Net)", "mc"), Family("ensemble (3 sigmoid U-Nets)", "ens")]
    page = tmp_path / "comparison.md"
    page.write_text(f"# C\n\n{BEGIN_MARKER}\ncompare tables\n{END_MARKER}\n\n{HEADS_MARKERS[0]}\nstale\n{HEADS_MARKERS[1]}\n\nhand-written\n")
    options = HeadsOptions(n_heads=1, variants=SUITE, doc=page, output_dir=tmp_path / "out", command="python -m evaluation compare-heads --heads 1")

    def runner(family: Family, images: dict[str, str], folder: Path) -> dict:
        return run_family(family, images, str(folder), factory=lambda bundle: ScriptedSegmenter(plans[bundle]))

    results = compare_on_cases(cases, families, options, runner=runner)
    rows = {(row["family"][:5], row["variant"]): row for row in results["rows"]}
    assert len(rows) == 10 and [r["family"] for r in results["rows"]] == [families[0].name] * 5 + [families[1].name] * 5
    assert rows["multi", "as-is"]["scores"]["dice"]["brain"] == 1.0 and not rows["multi", "as-is"]["flagged"]
    refused = rows["multi", "noise"]
    assert refused["refused"] and refused["flagged"] and refused["scores"] is None and refused["qc"]["status"] == "fail"
    assert [r["code"] for r in refused["qc"]["reasons"]] == ["no_brain"]
    assert rows["ensem", "as-is"]["scores"]["brain_volume_error_pct"] == -100.0
    assert rows["ensem", "T2-like"]["scores"] is None and not rows["ensem", "T2-like"]["refused"]  # QC-only variant: not scored
    assert results["families"][0]["brain_extractor"] is False and results["families"][0]["peak_rss_kib"] > 0

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rows"][5]["scores"]["hd95_mm"]["brain"] is None  # infinite distance, strict JSON
    text = page.read_text()
    assert f"{BEGIN_MARKER}\ncompare tables\n{END_MARKER}" in text and text.endswith("hand-written\n") and "stale" not in text
    assert "| gamma 2 | pass | flagged 1 / 1 (contrast ×1) | flagged 0 / 1 |" in text
    assert "| noise | flagged | missed 0 / 1 (no_brain ×1) | missed 1 / 1 |" in text
    assert "realistic heads flagged 1 of 2, T2-like/noise/empty missed 1 of 3." in text  # multi-class
    assert "realistic heads flagged 0 of 2, T2-like/noise/empty missed 3 of 3." in text  # ensemble

    calibration = qc_calibration_rows(results)
    assert len(calibration) == 10 and calibration[1]["white_over_gray"] == -0.2 and calibration[3]["expect_flagged"] is True
    table = format_calibration(calibration).splitlines()
    assert table[0].split() == ["variant", "family", "expect", "status", "brain_volume_ml", "structure", "white_over_gray"]
    assert len(table) == 11


def test_a_family_runs_in_its_own_fresh_process(cases: list[HeadCase], tmp_path: Path) -> None:
    from evaluation.head_variants import write_case

    image = write_case(cases[0], tmp_path / "cases")["image"]
    run = run_in_fresh_process(Family("stand-in", "none"), {cases[0].name: str(image)}, tmp_path / "labels", factory=zero_segmenter)
    outcome = run["outcomes"][cases[0].name]
    assert outcome["qc"]["status"] == "pass" and np.load(outcome["labels"]).shape == cases[0].image.shape
    assert run["peak_rss_kib"] > 10_000 and run["brain_extractor"] is False


# --- the page ----------------------------------------------------------------------------------------------


def _row(family: str, variant: str, dice: float | None, status: str, codes: tuple[str, ...] = (), hd95: float | None = 2.0) -> dict:
    scores = None if dice is None else {
        "dice": {"brain": dice, "CSF": dice, "gray matter": dice, "white matter": dice},
        "hd95_mm": {"brain": hd95, "gray matter": hd95, "white matter": hd95}, "brain_volume_error_pct": 100 * (dice - 1),
    }
    return {"family": family, "variant": variant, "expect_flagged": variant == "noise", "flagged": status != "pass", "seconds": 2.0,
            "scores": scores, "qc": {"status": status, "reasons": [{"code": c} for c in codes]}}


def test_render_heads_gives_medians_counts_reasons_command_and_date() -> None:
    results = {
        "command": "python -m evaluation compare-heads --heads 2", "created": "2026-12-08 10:00 UTC", "seed": 0,
        "environment": {"versions": {"python": "3.11"}, "cpu_cores": 2, "machine": "Linux x86_64"},
        "cases": [{"variant": v, "head": h} for h in ("head00", "head01") for v in ("as-is", "noise")],
        "families": [{"name": "A", "bundle": "models/a", "brain_extractor": False, "peak_rss_kib": 2048 * 1024, "import_seconds": 1.0, "load_seconds": 0.5}],
        "rows": [_row("A", "as-is", 0.8, "pass"), _row("A", "as-is", 0.9, "warn", ("contrast",), hd95=None),
                 _row("A", "noise", None, "fail", ("no_brain",)), _row("A", "noise", 0.5, "pass")],
    }
    text = render_heads(results)
    assert text.startswith("_Generated by `python -m evaluation compare-heads --heads 2` on 2026-12-08 10:00 UTC")
    assert "| as-is | 0.850 | 0.850 | 0.850 | 0.850 | ∞ | ∞ | -15.0 | 1 / 2 | 2.0 |" in text  # an infinite HD95 of two: median inf
    assert "| noise | – | – | – | – | – | – | – | 1 / 2 | 2.0 |" in text  # judged by QC alone
    assert "Peak RSS of its process over the whole suite: 2048 MiB" in text and "no brain extractor" in text
    assert "| as-is | pass | flagged 1 / 2 (contrast ×1) |" in text and "| noise | flagged | missed 1 / 2 (no_brain ×1) |" in text
    assert "- A: realistic heads flagged 1 of 2, T2-like/noise/empty missed 1 of 2." in text


# --- the command line ------------------------------------------------------------------------------------


def test_the_subcommand_parses_into_options() -> None:
    options = heads_options(build_parser().parse_args(["compare-heads", "--heads", "1", "--variants", "as-is, T2-like,noise"]))
    assert options.n_heads == 1 and options.variants == ("as-is", "T2-like", "noise")
    assert options.output_dir == Path("outputs/compare-heads") and options.multiclass == Path("models/tissue-multiclass")
    defaults = heads_options(build_parser().parse_args(["compare-heads"]))
    assert defaults.n_heads == 2 and defaults.variants is None and defaults.seed == 0
    assert parse_variants("bias +-40%,Rician SNR 5") == ("bias +-40%", "Rician SNR 5") and set(parse_variants(",".join(VARIANTS))) == set(VARIANTS)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [(["--heads", "0"], "--heads N >= 1"), (["--heads", "-3"], "--heads N >= 1"), (["--variants", "as-is,bogus"], "['bogus']"),
     (["--variants", " , "], "Received: none"), (["--variants", "noise,noise"], "each variant once"), (["--seed", "-1"], "--seed >= 0")],
)  # fmt: skip
def test_bad_options_give_one_line_errors_before_anything_is_read(arguments: list[str], expected: str, caplog: pytest.LogCaptureFixture,
                                                                 tmp_path: Path) -> None:
    with caplog.at_level(logging.ERROR):
        status = main(["compare-heads", "--multiclass", str(tmp_path / "missing"), *arguments])
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert status == 1 and len(errors) == 1 and "\n" not in errors[0] and expected in errors[0], errors
    with pytest.raises(BrainsegError, match="Expected"):
        parse_variants("T1-like")
