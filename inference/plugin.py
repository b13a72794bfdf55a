"""What the ChRIS plugins share: their parser, the input-to-output mapping and the run with its summary.

ChRIS runs a plugin as ``<python> <selfpath>/<selfexec> [--flag value ...] INPUTDIR OUTPUTDIR``: input
read-only, an arbitrary non-root UID, HOME possibly unwritable, no network. Every volume matching
the patterns anywhere under INPUTDIR gets its outputs in the same relative folder under OUTPUTDIR;
so does every DICOM series (unless --no-dicom), named ``series-<number>-<hash>`` after its series, and
with --dicom-seg a DICOM SEG beside its outputs.
Logs go to stdout (ChRIS shows them to users): relative file names, seconds, structure volumes;
never header text of the inputs.

Importing this module (or a plugin module) changes nothing in ``os.environ`` and imports neither
TensorFlow nor matplotlib: `run_plugin` calls `prepare_environment` first, then imports them.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chris_plugin import PathMapper

from brainseg_tf.config import InferenceConfig, QcConfig
from brainseg_tf.errors import BundleError
from brainseg_tf.io import SUPPORTED_SUFFIXES
from brainseg_tf.runtime import import_tensorflow_quietly, prefer_onednn, use_cpu_budget
from inference.segmenter import Segmenter

logger = logging.getLogger(__name__)

DEFAULT_PATTERN = ",".join(f"**/*{suffix}" for suffix in SUPPORTED_SUFFIXES)
OUTPUT_FORMATS = ("same", *(suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES))
"""`inference.outputs.OUTPUT_FORMATS`, spelled out again: that module imports matplotlib, and the
parser is built when a plugin module is imported (tests check that the two agree)."""
MODELS_DIR_VARIABLE = "BRAINSEG_MODELS_DIR"
"""Where the images bake the bundles in; without it, the repository's ``models/`` folder."""


def prepare_environment() -> None:
    """Point HOME, KERAS_HOME and MPLCONFIGDIR at a fresh private temp folder where they are unset or unwritable.

    Keeps TensorFlow, Keras and matplotlib from writing anywhere but the temp dir under an
    arbitrary UID; the folder is removed when the process exits. Already writable settings (e.g.
    from the image's ENV) are kept. Also quiets TensorFlow's C++ log and asks for its oneDNN
    kernels (`brainseg_tf.runtime.prefer_onednn`). All of these are read when TensorFlow, Keras or
    matplotlib is imported: call this before.
    """
    scratch: Path | None = None
    for variable in ("HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        current = os.environ.get(variable)
        if current and _writable(Path(current)):
            continue
        if scratch is None:
            scratch = Path(tempfile.mkdtemp(prefix="brainseg-home-"))
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        folder = scratch if variable == "HOME" else scratch / variable.lower()
        folder.mkdir(exist_ok=True)
        os.environ[variable] = str(folder)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefer_onednn()


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def build_parser(description: str) -> argparse.ArgumentParser:
    """The plugin parser: only optional flags with defaults, store/store_true/store_false actions (ChRIS rules)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pattern", type=str, default=DEFAULT_PATTERN,
                        help="comma-separated glob patterns of the input volumes, relative to the input folder")
    parser.add_argument("--format", type=str, default="same", choices=OUTPUT_FORMATS,
                        help="file format of the label maps: same as each input, or nii.gz, nii, mgz")
    parser.add_argument("--no-qc", dest="qc", action="store_false",
                        help="do not draw the QC picture (axial, coronal, sagittal slices with the labels overlaid)")
    parser.add_argument("--probabilities", action="store_true", default=False,
                        help="also write the per-class probability maps (4D, float32; large)")
    parser.add_argument("--no-dicom", dest="dicom", action="store_false", default=True,
                        help="do not look for DICOM series (any file starting with a DICOM preamble, grouped by series)")
    parser.add_argument("--dicom-seg", action="store_true", default=False,
                        help="also write a DICOM SEG of each DICOM series' labels, referencing the series (for PACS)")
    parser.add_argument("--accept-named-contrast", action="store_true", default=False,
                        help="do not flag a DICOM series whose description names another contrast (T2, FLAIR, DWI, ...)")
    parser.add_argument("--largest-component", action="store_true", default=False,
                        help="keep only the largest connected component of each structure")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for TensorFlow; 0 uses every core the job may use")
    return parser


def bundle_path(name: str) -> Path:
    """A baked-in bundle: ``$BRAINSEG_MODELS_DIR/<name>``, else ``models/<name>`` of the source tree."""
    root = os.environ.get(MODELS_DIR_VARIABLE)
    return Path(root) / name if root else Path(__file__).resolve().parents[1] / "models" / name


def find_inputs(inputdir: Path, outputdir: Path, pattern: str) -> list[tuple[Path, Path]]:
    """Each distinct file under ``inputdir`` matching any of the comma-separated globs, with its output folder.

    Hidden files and anything inside a hidden folder are skipped. The output folder of
    ``inputdir/a/b/x.nii.gz`` is ``outputdir/a/b`` (not created here).

    Returns:
        ``(input file, output folder)`` pairs sorted by input path; empty when nothing matches.

    Raises:
        ValueError: ``inputdir`` is not a folder, or ``outputdir`` exists and is not one.
    """
    mapper = PathMapper(
        inputdir,
        outputdir,
        name_mapper=lambda relative, root: root / relative.parent,
        globs=[glob.strip() for glob in pattern.split(",") if glob.strip()],
        parents=False,  # a failed input leaves no folder behind: the outputs' writer makes it
        fail_if_empty=False,  # PathMapper would sys.exit; run_plugin reports it in its own words
        filter=lambda path: path.is_file() and not any(part.startswith(".") for part in path.relative_to(inputdir).parts),
    )
    return sorted(dict(mapper).items())  # a file matched by several globs is segmented once


def run_plugin(options: argparse.Namespace, inputdir: Path, outputdir: Path, bundle: Path, plugin: str) -> int:
    """Segment every matching volume under ``inputdir`` into the mirrored folder under ``outputdir``.

    Calls `prepare_environment` first (it changes ``os.environ``: this is an entry point).

    Returns:
        0 when every input was segmented; 1 when any failed or none matched (each failure is one
        line on stdout and again on stderr at the end; a failed input leaves no output).
    """
    prepare_environment()
    # Imported only now: inference.batch imports inference.outputs, which imports matplotlib
    # (brainseg_tf.visualize), and matplotlib reads MPLCONFIGDIR when it is imported.
    from inference.batch import SegmentationJob, dicom_jobs, segment_files
    from inference.outputs import OutputOptions, writes_aseg_stats

    _log_to_stdout()
    start = time.perf_counter()
    try:
        inputs = find_inputs(inputdir, outputdir, options.pattern)
        series = dicom_jobs(inputdir, outputdir) if options.dicom else []
    except ValueError as error:
        return _fail([" ".join(str(error).split())])
    in_series = {path for job in series for path in job.series.files}  # type: ignore[union-attr]
    inputs = [(path, folder) for path, folder in inputs if path not in in_series]
    if not inputs and not series:
        return _fail([f"{inputdir}: no input matches --pattern {options.pattern!r}"])
    jobs = [SegmentationJob(path, folder, str(path.relative_to(inputdir))) for path, folder in inputs] + series
    logger.info("%s: %d input volume(s), %d DICOM series", plugin, len(inputs), len(series))
    try:
        import_tensorflow_quietly()
        use_cpu_budget(options.threads)
        settings = InferenceConfig(qc=QcConfig(accept_named_contrast=options.accept_named_contrast))
        segmenter = Segmenter.from_bundle(bundle, settings)
        output_options = OutputOptions(options.format, options.qc, options.probabilities, aseg_stats=writes_aseg_stats(segmenter.label_set))
    except ValueError as error:  # BundleError included: the image is broken, not the input
        return _fail([" ".join(str(error).split())])
    model = {"bundle": bundle.name, "family": segmenter.family, "plugin": plugin}
    try:
        results = segment_files(segmenter, jobs, output_options, options.largest_component, model, dicom_seg=options.dicom_seg)
    except BundleError as error:  # the model failed, not an input: segment_files stops there
        return _fail([" ".join(str(error).split())])
    failures = [r.error for r in results if r.error is not None]
    found = sorted({v.name for r in results for v in r.volumes if v.voxels})
    logger.info(
        "summary: %d of %d file(s) segmented in %.1f s; structures found: %s",
        len(results) - len(failures), len(results), time.perf_counter() - start, ", ".join(found) or "none",
    )
    return _fail(failures) if failures else 0


def _fail(lines: list[str]) -> int:
    logger.error("%d problem(s):", len(lines))
    for line in lines:
        print(line, file=sys.stderr)
    return 1


def _log_to_stdout() -> None:
    """Plugin logs on stdout, one line each, without library debug chatter.

    A later run in the same process replaces the handler (an earlier ``sys.stdout`` may be closed).
    """
    root = logging.getLogger()
    for earlier in [h for h in root.handlers if getattr(h, "_brainseg_plugin", False)]:
        root.removeHandler(earlier)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler._brainseg_plugin = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
