"""Command line of `python -m inference`: parse, configure logging and threads, segment, report failures."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from brainseg_tf.config import InferenceConfig, QcConfig
from brainseg_tf.errors import BrainsegError, BundleError
from brainseg_tf.io import SUPPORTED_SUFFIXES
from brainseg_tf.runtime import import_tensorflow_quietly, prefer_onednn, use_cpu_budget
from inference.batch import JobResult, SegmentationJob, dicom_jobs, planned_outputs, segment_files
from inference.outputs import OUTPUT_FORMATS, OutputOptions, writes_aseg_stats
from inference.segmenter import Segmenter

logger = logging.getLogger("inference")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m inference`."""
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Segment T1 volumes (NIfTI, MGZ or DICOM series, any orientation and voxel size) with a brainseg-tf model bundle. "
        "Per input: <name>_labels (label map on the input's grid), <name>_volumes.csv/.json, <name>_qc.png.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help=f"volume files, or folders searched recursively for {', '.join(SUPPORTED_SUFFIXES)} and DICOM series")
    parser.add_argument("--model", required=True, type=Path, metavar="BUNDLE", help="model bundle folder, e.g. models/tissue-multiclass")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/inference"), metavar="DIR",
                        help="where outputs go; a folder input's subfolders are mirrored (default: %(default)s)")
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default="same", help="label map format (default: same as the input)")
    parser.add_argument("--no-qc", dest="qc", action="store_false", help="skip the QC picture")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps (4D float32)")
    parser.add_argument("--no-dicom", dest="dicom", action="store_false", help="do not look for DICOM series in folder inputs")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="also write a DICOM SEG (<series>_seg.dcm) of each DICOM series' labels, referencing the series")
    parser.add_argument("--accept-named-contrast", action="store_true",
                        help="do not flag a DICOM series whose description names another contrast (T2, FLAIR, DWI, ...)")
    parser.add_argument("--largest-component", action="store_true", help="keep only the largest connected component of each class")
    parser.add_argument("--batch-size", type=int, default=InferenceConfig.batch_size, help="slices per prediction batch (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for TensorFlow (default: what the process may use: its cgroup CPU quota, else its cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (tracebacks of failed inputs)")
    return parser


def find_jobs(inputs: Sequence[Path], output_dir: Path, dicom: bool = True) -> tuple[list[SegmentationJob], list[str]]:
    """One job per input file; folders give one job per volume found below them, mirrored under ``output_dir``,
    and with ``dicom`` one per DICOM series (`inference.batch.dicom_jobs`).

    Hidden files and folders (names starting with '.') are skipped. A given path that is not a
    folder is always a job, even if missing: it then fails alone, like any other bad input.

    Returns:
        (jobs, one-line problems of folders that hold no volume).
    """
    jobs, problems = [], []
    for given in inputs:
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if _is_volume(p) and not _hidden(p.relative_to(given)))
            series = dicom_jobs(given, output_dir) if dicom else []
            if not found and not series:
                problems.append(f"{given}: no {', '.join(SUPPORTED_SUFFIXES)} file in this folder")
            jobs += [SegmentationJob(p, output_dir / p.relative_to(given).parent, str(p.relative_to(given))) for p in found]
            jobs += series
        else:
            jobs.append(SegmentationJob(given, output_dir, str(given)))
    return jobs, problems


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def main(argv: list[str] | None = None) -> int:
    """Segment every input; return 0 when all succeeded, 1 when any failed or nothing could start."""
    prefer_onednn()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    try:
        options = OutputOptions(args.format, args.qc, args.probabilities)
        jobs, problems = find_jobs(args.inputs, args.output_dir, args.dicom)
        planned_outputs(jobs, options)
        import_tensorflow_quietly()
        use_cpu_budget(args.threads)
        qc = QcConfig(accept_named_contrast=args.accept_named_contrast)
        segmenter = Segmenter.from_bundle(args.model, InferenceConfig(batch_size=args.batch_size, qc=qc))
        options = dataclasses.replace(options, aseg_stats=writes_aseg_stats(segmenter.label_set))
    except (BrainsegError, ValueError) as error:
        logger.error("%s", " ".join(str(error).split()))
        return 1
    model = {"bundle": args.model.resolve().name, "family": segmenter.family}
    for problem in problems:
        logger.error("%s", problem)
    try:
        with progress_bar(len(jobs)) as bar, (contextlib.nullcontext() if bar.disable else logging_redirect_tqdm()):
            results = segment_files(segmenter, jobs, options, args.largest_component, model,
                                    on_result=lambda position, result: bar.update(), dicom_seg=args.dicom_seg)
    except BundleError as error:  # the model's fault, not an input's: the run stops, outputs already written stay
        line = " ".join(str(error).split())
        logger.error("%s", line)
        print(line, file=sys.stderr)
        return 1
    return _report(results, problems, time.perf_counter() - start)


def progress_bar(total: int) -> tqdm:
    """The bar over the input files (on stderr; `main` prints the log lines above it).

    Disabled when stdout is not a terminal (CI, pipes, log files), where the one log line per file is the record.
    """
    return tqdm(total=total, desc="segmenting", unit="volume", disable=not sys.stdout.isatty())


def _report(results: list[JobResult], problems: list[str], seconds: float) -> int:
    """Log the summary; print every failure again, one line each, on stderr; the exit status."""
    failures = problems + [r.error for r in results if r.error is not None]
    logger.info("segmented %d of %d input(s) in %.1f s", sum(r.ok for r in results), len(results) + len(problems), seconds)
    if failures:
        logger.error("%d input(s) failed:", len(failures))
        for line in failures:
            print(line, file=sys.stderr)
        return 1
    return 0
