"""The realistic-heads comparison (`make compare-heads`): both families on held-out synthetic full heads, and input QC.

Cases come from `evaluation.head_variants.head_cases` (full heads around the test-split brains and their
degraded variants, by seed), built once and written to a scratch folder (`write_case`). Each family's
bundle then runs in its own fresh process (multiprocessing "spawn", as `evaluation.compare` runs its
methods), over the whole suite, through `inference.segmenter.Segmenter` exactly as a user runs it: the
saved image is loaded (`load_image`) and segmented; an `ImageError` means the volume was refused, which
counts as QC status ``fail``. So the peak resident memory (``VmHWM``, `brainseg_tf.runtime.peak_rss_bytes`) a family reports is its own,
TensorFlow included.

Scores are computed on each case's own grid against its references (`brainseg_tf.scoring`, voxel sizes
from the affine): Dice of the brain (labels > 0 vs the brain mask) and of CSF, gray and white matter;
HD95 of the brain, gray and white matter; the brain volume error, % of the reference brain mask's
volume (signed: + over-segmented). A case is flagged when its QC status is ``warn`` or ``fail``:
realistic variants should pass, the `FLAGGED` variants (T2-like, noise, empty) must be flagged.

`evaluation.head_variants` (which imports TensorFlow through the synthesis) is imported only where cases
are built or names checked, so a family's fresh process sets TensorFlow up as `python -m inference` does
before anything imports it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainseg_tf.runtime import peak_rss_bytes
from brainseg_tf.config import Config
from brainseg_tf.errors import BrainsegError, ImageError
from brainseg_tf.io import load_image, load_label_map, voxel_sizes
from brainseg_tf.labels import TISSUE
from brainseg_tf.scoring import dice_scores, hausdorff95
from evaluation.report import call_in_fresh_process, finite_or_none, update_doc, write_text

if TYPE_CHECKING:
    from evaluation.head_variants import HeadCase

logger = logging.getLogger(__name__)

HEADS_MARKERS = ("<!-- heads:begin -->", "<!-- heads:end -->")
CSF, GM, WM = 1, 2, 3
DICE_KEYS = ("brain", TISSUE.names[CSF], TISSUE.names[GM], TISSUE.names[WM])
HD95_KEYS = ("brain", TISSUE.names[GM], TISSUE.names[WM])
FLAGGED_STATUSES = frozenset({"warn", "fail"})
Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` as in `evaluation.compare`; stages ``building`` (one step per case),
``segmenting`` (one per family) and ``scoring`` (one per case and family)."""
SegmenterFactory = Callable[[str], Any]
"""Bundle folder -> an object with ``segment(image)`` returning a `Segmentation` (tests pass stand-ins)."""


@dataclass(frozen=True)
class HeadsOptions:
    """What `run_heads_comparison` runs and where it writes.

    Attributes:
        multiclass: multi-class bundle folder.
        ensemble: ensemble bundle folder.
        n_heads: base heads, >= 1.
        variants: names among `VARIANTS`, each once; None: every variant.
        seed: the suite's seed, >= 0.
        doc: Markdown page; only the part between `HEADS_MARKERS` is rewritten.
        output_dir: ``results.json`` (every case x family row, raw) goes here.
        command: the command line, recorded in the page.
    """

    multiclass: Path = Path("models/tissue-multiclass")
    ensemble: Path = Path("models/tissue-ensemble")
    n_heads: int = 2
    variants: tuple[str, ...] | None = None
    seed: int = 0
    doc: Path = Path("docs/comparison.md")
    output_dir: Path = Path("outputs/compare-heads")
    command: str = "python -m evaluation compare-heads"


@dataclass(frozen=True)
class Family:
    """One compared family: its display name and bundle folder."""

    name: str
    bundle: str


@dataclass(frozen=True)
class WrittenCase:
    """A case as written to the scratch folder: what the report needs, and its files (image, tissue, brain)."""

    name: str
    variant: str
    head: str
    subject_id: str
    expect_flagged: bool
    params: dict[str, Any]
    shape: tuple[int, ...]
    voxel_size_mm: tuple[float, ...]
    files: dict[str, str]


def parse_variants(text: str) -> tuple[str, ...]:
    """``"as-is, T2-like"`` -> ``("as-is", "T2-like")``: comma-separated names among `VARIANTS`.

    Raises:
        BrainsegError: an empty list, an unknown name or a name given twice.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    check_options(HeadsOptions(variants=names))
    return names


def chosen_variants(options: HeadsOptions) -> tuple[str, ...]:
    """The variants ``options`` asks for, in order (every one of `VARIANTS` for None)."""
    from evaluation.head_variants import VARIANTS

    return VARIANTS if options.variants is None else tuple(options.variants)


def check_options(options: HeadsOptions) -> None:
    """Check the numbers and names (nothing is read or built).

    Raises:
        BrainsegError: ``n_heads`` below 1, ``seed`` below 0, no variants, unknown or repeated ones.
    """
    from evaluation.head_variants import VARIANTS

    if isinstance(options.n_heads, bool) or not isinstance(options.n_heads, int) or options.n_heads < 1:
        raise BrainsegError(f"Expected --heads N >= 1. Received: {options.n_heads!r}")
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or options.seed < 0:
        raise BrainsegError(f"Expected --seed >= 0. Received: {options.seed!r}")
    variants = chosen_variants(options)
    unknown = [name for name in variants if name not in VARIANTS]
    if not variants or unknown:
        raise BrainsegError(f"Expected --variants as comma-separated names among {', '.join(VARIANTS)}. Received: {unknown or 'none'}")
    if len(set(variants)) != len(variants):
        raise BrainsegError(f"Expected each variant once. Received: {', '.join(variants)}")


def run_heads_comparison(config: Config, options: HeadsOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Build the suite's cases, run both bundles on them, score, write ``results.json`` and the page's heads section.

    Args:
        config: where the test brains come from (`head_cases`).
        options: what to run and where to write.
        progress: told of each case built, family run and label map scored.

    Returns:
        The results as written to ``results.json``.

    Raises:
        BrainsegError: bad options, or a bundle fails verification or is not of the expected kind.
    """
    from evaluation.head_variants import head_cases

    check_options(options)
    families = check_families(options)
    cases = head_cases(config, options.n_heads, seed=options.seed, variants=chosen_variants(options))
    return compare_on_cases(cases, families, options, progress=progress)


def check_families(options: HeadsOptions) -> list[Family]:
    """Verify both bundles (manifest, kind, the tissue label set); return the two families in report order."""
    from brainseg_tf.bundle import read_bundle_info

    multiclass, ensemble = read_bundle_info(options.multiclass), read_bundle_info(options.ensemble)
    if multiclass.kind != "model" or multiclass.family != "multiclass":
        raise BrainsegError(f"Expected a multi-class model bundle at {options.multiclass}. Received: {multiclass.kind} {multiclass.family}")
    if ensemble.kind != "ensemble":
        raise BrainsegError(f"Expected an ensemble bundle at {options.ensemble}. Received: kind {ensemble.kind}")
    for info in (multiclass, ensemble):
        if info.label_set != TISSUE:
            raise BrainsegError(f"Expected bundles of the tissue label set. Received: {info.label_set.name} at {info.path}")
    return [Family("multi-class (softmax U-Net)", str(options.multiclass)), Family("ensemble (3 sigmoid U-Nets)", str(options.ensemble))]


def compare_on_cases(cases: Iterable[HeadCase], families: list[Family], options: HeadsOptions,
                     runner: Callable[..., dict[str, Any]] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Write the cases once, run each family on all of them, score, write the outputs (see `run_heads_comparison`).

    Args:
        runner: ``runner(family, images, folder)`` -> a family's run (`run_family`'s result); by default
            `run_in_fresh_process` with the real `Segmenter`.
    """
    runner = runner or run_in_fresh_process
    with tempfile.TemporaryDirectory(prefix="brainseg-heads-") as scratch:
        written = write_cases(cases, Path(scratch) / "cases", progress, options.n_heads * len(chosen_variants(options)))
        images = {case.name: case.files["image"] for case in written}
        runs = {}
        _tell(progress, "segmenting", 0, len(families))
        for number, family in enumerate(families):
            runs[family.name] = runner(family, images, Path(scratch) / f"family-{number}")
            _tell(progress, "segmenting", number + 1, len(families))
        rows = score_rows(families, written, runs, progress)
    results = _results(options, families, written, runs, rows)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    write_text(options.output_dir / "results.json", json.dumps(finite_or_none(results), indent=2) + "\n")
    update_doc(options.doc, render_heads(results), HEADS_MARKERS)
    logger.info("QC measures per variant (for calibrating inference.qc limits):\n%s", format_calibration(qc_calibration_rows(results)))
    logger.info("realistic heads written: %s, %s", options.doc, options.output_dir / "results.json")
    return results


def write_cases(cases: Iterable[HeadCase], folder: Path, progress: Progress | None = None, total: int = 0) -> list[WrittenCase]:
    """Write each case (image and references, `write_case`) as it is built; keep only its description in memory.

    ``total``: how many cases the iterable yields, for ``progress`` (0: unknown).
    """
    from evaluation.head_variants import write_case

    written: list[WrittenCase] = []
    _tell(progress, "building", 0, total)
    for case in cases:
        if any(case.name == other.name for other in written):
            raise BrainsegError(f"Expected unique case names. Received: {case.name} twice")
        files = {key: str(path) for key, path in write_case(case, folder).items()}
        written.append(WrittenCase(case.name, case.variant, case.name.split("-", 1)[0], case.subject_id, case.expect_flagged,
                                   dict(case.params), case.image.shape, tuple(float(s) for s in voxel_sizes(case.image.affine)), files))
        _tell(progress, "building", len(written), max(total, len(written)))
    return written


def run_in_fresh_process(family: Family, images: dict[str, str], folder: Path, factory: SegmenterFactory | None = None) -> dict[str, Any]:
    """`run_family` in a new spawned process, so its peak RSS is the family's alone; ``factory`` must pickle."""
    logger.info("%s: segmenting %d case(s) in a fresh process", family.name, len(images))
    run = call_in_fresh_process(run_family, family, images, str(folder), factory)
    logger.info("%s: peak RSS %.0f MiB, brain extraction %s", family.name, run["peak_rss_kib"] / 1024, "on" if run["brain_extractor"] else "off")
    return run


def run_family(family: Family, images: dict[str, str], folder: str, factory: SegmenterFactory | None = None) -> dict[str, Any]:
    """Load the family's segmenter, then per case: load the image, segment, save the labels, keep QC and time.

    Args:
        images: case name -> image file, in the order to run.
        folder: labels go here as ``<case>.npy`` (created).
        factory: bundle folder -> segmenter; None: `Segmenter.from_bundle` on TensorFlow set up as `python -m inference` does.

    Returns:
        ``outcomes`` (case name -> `segment_case`'s dict), ``import_seconds``, ``load_seconds``,
        ``brain_extractor`` (the bundle holds one) and ``peak_rss_kib`` of this process.
    """
    started = time.perf_counter()
    if factory is None:
        from brainseg_tf.runtime import import_tensorflow_quietly, prefer_onednn, use_cpu_budget

        prefer_onednn()
        import_tensorflow_quietly()
        use_cpu_budget(None)
        from inference.segmenter import Segmenter

        factory = Segmenter.from_bundle
    imported = time.perf_counter()
    segmenter = factory(family.bundle)
    loaded = time.perf_counter()
    Path(folder).mkdir(parents=True, exist_ok=True)
    outcomes = {name: segment_case(segmenter, image_file, str(Path(folder) / f"{name}.npy")) for name, image_file in images.items()}
    return {
        "outcomes": outcomes, "import_seconds": imported - started, "load_seconds": loaded - imported,
        "brain_extractor": getattr(segmenter, "extractor", None) is not None,
        "peak_rss_kib": peak_rss_bytes() // 1024,
    }


def segment_case(segmenter: Any, image_file: str, labels_file: str) -> dict[str, Any]:
    """Segment one saved image as a user would; a refused volume (`ImageError`) is QC status ``fail``.

    Returns:
        ``labels`` (the saved file, None when refused), ``seconds``, ``qc`` (`QcVerdict.to_dict` form),
        ``brain`` (extraction volume and direction agreement, None without an extractor).
    """
    image = load_image(image_file)
    start = time.perf_counter()
    try:
        segmentation = segmenter.segment(image)
    except ImageError as error:
        message = str(error)
        code = "no_brain" if "no brain found" in message else "refused"
        qc = {"status": "fail", "score": 0.0, "reasons": [{"code": code, "message": message}], "measures": {}}
        return {"labels": None, "seconds": time.perf_counter() - start, "qc": qc, "brain": None}
    np.save(labels_file, np.asarray(segmentation.labels.array, np.uint8))
    brain = segmentation.brain
    return {
        "labels": labels_file, "seconds": float(segmentation.seconds), "qc": segmentation.qc.to_dict(),
        "brain": None if brain is None else {"volume_ml": brain.volume_ml, "direction_agreement": brain.direction_agreement,
                                             "already_stripped": brain.already_stripped},
    }


def score_labels(labels: np.ndarray, tissue: np.ndarray, brain_mask: np.ndarray, voxel_size: tuple[float, ...]) -> dict[str, Any]:
    """Scores of one label map (``TISSUE`` classes) against a case's references, all on one grid.

    Returns:
        ``dice`` (`DICE_KEYS`), ``hd95_mm`` (`HD95_KEYS`; inf where a structure is in one map only),
        ``brain_ml``, ``reference_brain_ml`` and ``brain_volume_error_pct`` (signed; nan for an empty reference).
    """
    labels, tissue = np.asarray(labels), np.asarray(tissue)
    brain, reference = (labels > 0).astype(np.uint8), (np.asarray(brain_mask) > 0).astype(np.uint8)
    dice = dice_scores(labels, tissue, (CSF, GM, WM))
    voxel_ml = float(np.prod(voxel_size)) / 1000.0
    brain_ml, reference_ml = float(brain.sum()) * voxel_ml, float(reference.sum()) * voxel_ml
    return {
        "dice": {"brain": dice_scores(brain, reference, (1,))[1], **{TISSUE.names[c]: dice[c] for c in (CSF, GM, WM)}},
        "hd95_mm": {"brain": hausdorff95(brain, reference, 1, voxel_size),
                    **{TISSUE.names[c]: hausdorff95(labels, tissue, c, voxel_size) for c in (GM, WM)}},
        "brain_ml": brain_ml, "reference_brain_ml": reference_ml,
        "brain_volume_error_pct": 100.0 * (brain_ml - reference_ml) / reference_ml if reference_ml > 0 else float("nan"),
    }


def score_rows(families: list[Family], cases: list[WrittenCase], runs: dict[str, dict[str, Any]],
               progress: Progress | None = None) -> list[dict[str, Any]]:
    """One row per family and case (families in order): the case, its QC outcome, time and scores.

    Scores are None for a refused volume (no labels) and for the QC-only variants (``expect_flagged``: their
    references are the base head's, and HD95 over a whole head is the costly part of scoring).
    """
    rows, total = [], len(families) * len(cases)
    _tell(progress, "scoring", 0, total)
    for case in cases:
        references = None if case.expect_flagged else [load_label_map(case.files[key]).array for key in ("tissue", "brain")]
        for family in families:
            outcome = runs[family.name]["outcomes"][case.name]
            scored = outcome["labels"] is not None and references is not None
            scores = score_labels(np.load(outcome["labels"]), *references, case.voxel_size_mm) if scored else None
            rows.append({
                "family": family.name, "case": case.name, "variant": case.variant, "head": case.head, "expect_flagged": case.expect_flagged,
                "refused": outcome["labels"] is None, "flagged": outcome["qc"]["status"] in FLAGGED_STATUSES,
                "seconds": outcome["seconds"], "qc": outcome["qc"], "brain_extraction": outcome["brain"], "scores": scores,
            })
            _tell(progress, "scoring", len(rows), total)
    order = {family.name: n for n, family in enumerate(families)}
    return sorted(rows, key=lambda row: order[row["family"]])  # stable: each family's cases in suite order


def _results(options: HeadsOptions, families: list[Family], cases: list[WrittenCase], runs: dict, rows: list[dict]) -> dict[str, Any]:
    from evaluation.compare import environment

    described = [{**asdict(f), **{k: v for k, v in runs[f.name].items() if k != "outcomes"}} for f in families]
    return {
        "command": options.command, "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": environment(), "seed": options.seed, "n_heads": options.n_heads, "variants": list(chosen_variants(options)),
        "cases": [{k: v for k, v in asdict(c).items() if k != "files"} for c in cases], "families": described, "rows": rows,
        "notes": "hd95_mm is null where a structure is in exactly one of prediction and reference (infinite distance); "
                 "scores are null for refused volumes and QC-only variants (expect_flagged); brain_volume_error_pct is signed (+ over-segmented)",
    }


def _tell(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


# --- summaries and the page -------------------------------------------------------------------------------


def qc_outcomes(results: dict[str, Any], family: str) -> dict[str, dict[str, Any]]:
    """Per variant (suite order): ``expect_flagged``, ``heads``, ``wrong`` (realistic: flagged; `FLAGGED`: missed), ``reasons`` (code counts)."""
    outcomes: dict[str, dict[str, Any]] = {}
    for row in (r for r in results["rows"] if r["family"] == family):
        entry = outcomes.setdefault(row["variant"], {"expect_flagged": row["expect_flagged"], "heads": 0, "wrong": 0, "reasons": Counter()})
        entry["heads"] += 1
        entry["wrong"] += int(row["flagged"] != row["expect_flagged"])
        entry["reasons"].update(reason["code"] for reason in row["qc"]["reasons"])
    return outcomes


def qc_calibration_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case and family: the QC measures with ``expect_flagged``, status and score, for calibrating `QcConfig` limits."""
    return [{"family": row["family"], "case": row["case"], "variant": row["variant"], "expect_flagged": row["expect_flagged"],
             "status": row["qc"]["status"], "score": row["qc"]["score"], **row["qc"]["measures"]} for row in results["rows"]]


def format_calibration(rows: list[dict[str, Any]]) -> str:
    """A compact text table: per variant and family, each measure's range over the heads (``lo..hi``) and the statuses."""
    fixed = {"family", "case", "variant", "expect_flagged", "status", "score"}
    measures = sorted({key for row in rows for key in row} - fixed)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], _short(row["family"])), []).append(row)
    lines = [["variant", "family", "expect", "status", *measures]]
    for (variant, family), group in groups.items():
        statuses = ",".join(f"{s}x{n}" for s, n in sorted(Counter(r["status"] for r in group).items()))
        lines.append([variant, family, "flag" if group[0]["expect_flagged"] else "pass", statuses,
                      *(_range([r[m] for r in group if r.get(m) is not None]) for m in measures)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def render_heads(results: dict[str, Any]) -> str:
    """The generated heads section: a score table per family, the QC table, the command, date and environment."""
    variants = list(dict.fromkeys(case["variant"] for case in results["cases"]))
    heads = sorted({case["head"] for case in results["cases"]})
    lines = [
        f"_Generated by `{results['command']}` on {results['created']}; the text between the heads markers is rewritten on every run._",
        "",
        f"{len(heads)} held-out synthetic full head(s) (seed {results['seed']}), {len(variants)} variant(s) each. "
        "Score cells are medians over the heads a family segmented (a refused volume has no labels and counts only as flagged); "
        "the T2-like, noise and empty variants are judged by QC alone (–). Brain volume error: signed, % of the reference brain mask.",
        "",
    ]
    for family in results["families"]:
        lines += _family_lines(results, family, variants)
    lines += _qc_lines(results, variants)
    environment = results["environment"]
    versions = ", ".join(f"{name} {version}" for name, version in environment["versions"].items())
    lines.append(f"Environment: {versions}; {environment['cpu_cores']} CPU cores ({environment['machine']}).")
    return "\n".join(lines)


def _family_lines(results: dict[str, Any], family: dict[str, Any], variants: list[str]) -> list[str]:
    header = ["variant", *(f"Dice {k}" for k in DICE_KEYS), "HD95 GM, mm", "HD95 WM, mm", "brain volume error, %", "flagged / heads", "median s"]
    rows = []
    for variant in variants:
        group = [r for r in results["rows"] if r["family"] == family["name"] and r["variant"] == variant]
        scored = [r["scores"] for r in group if r["scores"] is not None and not r["expect_flagged"]]
        cells = [_median([s["dice"][k] for s in scored], ".3f") for k in DICE_KEYS]
        cells += [_median([_inf(s["hd95_mm"][k]) for s in scored], ".2f") for k in (TISSUE.names[GM], TISSUE.names[WM])]
        cells.append(_median([s["brain_volume_error_pct"] for s in scored], "+.1f"))
        flagged = sum(r["flagged"] for r in group)
        rows.append([variant, *cells, f"{flagged} / {len(group)}", _median([r["seconds"] for r in group], ".1f")])
    extraction = "brain extraction in the bundle" if family["brain_extractor"] else "no brain extractor in the bundle"
    cost = (f"Peak RSS of its process over the whole suite: {family['peak_rss_kib'] / 1024:.0f} MiB; runtime import "
            f"{family['import_seconds']:.1f} s, model load {family['load_seconds']:.1f} s; seconds per volume from the loaded image to its labels.")
    return [f"### {family['name']}: `{family['bundle']}` ({extraction})", "", cost, "", *_table(header, rows), ""]


def _qc_lines(results: dict[str, Any], variants: list[str]) -> list[str]:
    families = [f["name"] for f in results["families"]]
    per_family = {name: qc_outcomes(results, name) for name in families}
    rows = []
    for variant in variants:
        expected = per_family[families[0]][variant]["expect_flagged"]
        cells = [f"{'missed' if expected else 'flagged'} {o['wrong']} / {o['heads']}{_reasons(o['reasons'])}"
                 for o in (per_family[name][variant] for name in families)]
        rows.append([variant, "flagged" if expected else "pass", *cells])
    totals = []
    for name in families:
        outcomes = per_family[name].values()
        realistic = [(o["wrong"], o["heads"]) for o in outcomes if not o["expect_flagged"]]
        bad = [(o["wrong"], o["heads"]) for o in outcomes if o["expect_flagged"]]
        totals.append(f"- {name}: realistic heads flagged {sum(w for w, _ in realistic)} of {sum(h for _, h in realistic)}, "
                      f"T2-like/noise/empty missed {sum(w for w, _ in bad)} of {sum(h for _, h in bad)}.")
    note = ("Goal: 0 realistic heads flagged and 0 T2-like, noise or empty heads missed. Flagged = QC status warn or fail "
            "(fail: refused, no labels); reasons are `inference.qc` codes with their counts over the flagged heads.")
    return ["### Input QC", "", note, "", *_table(["variant", "expected", *families], rows), "", *totals, ""]


def _reasons(counts: Counter) -> str:
    return " (" + ", ".join(f"{code} ×{n}" for code, n in counts.most_common()) + ")" if counts else ""


def _median(values: list[float], spec: str) -> str:
    finite_or_inf = [v for v in values if v is not None and not np.isnan(v)]
    if not finite_or_inf:
        return "–"
    value = float(np.median(finite_or_inf))
    return "∞" if np.isinf(value) else f"{value:{spec}}"


def _inf(value: float | None) -> float:
    return float("inf") if value is None else value  # results.json stores an infinite HD95 as null


def _range(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.3g}" if low == high else f"{low:.3g}..{high:.3g}"


def _short(family: str) -> str:
    return family.split(" (")[0]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
