"""What the ChRIS plugins share: their parser, the input-to-output mapping and the run with its summary.

ChRIS runs a plugin as ``<python> <selfpath>/<selfexec> [--flag value ...] INPUTDIR OUTPUTDIR``: input
read-only, an arbitrary non-root UID, HOME possibly unwritable, no network. Every volume matching
the patterns anywhere under INPUTDIR gets its outputs in the same relative folder under OUTPUTDIR.
Logs go to stdout (ChRIS shows them to users): relative file names, seconds, structure volumes;
never header text of the inputs.

Call `prepare_environment` before TensorFlow or matplotlib is imported.
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

from brainseg_tf.io import SUPPORTED_SUFFIXES
from inference.runtime import prefer_onednn

logger = logging.getLogger(__name__)

DEFAULT_PATTERN = ",".join(f"**/*{suffix}" for suffix in SUPPORTED_SUFFIXES)
MODELS_DIR_VARIABLE = "BRAINSEG_MODELS_DIR"
"""Where the images bake the bundles in; without it, the repository's ``models/`` folder."""


def prepare_environment() -> None:
    """Point HOME, KERAS_HOME and MPLCONFIGDIR at a fresh private temp folder where they are unset or unwritable.

    Keeps TensorFlow, Keras and matplotlib from writing anywhere but the temp dir under an
    arbitrary UID; the folder is removed when the process exits. Already writable settings (e.g.
    from the image's ENV) are kept. Also quiets TensorFlow's C++ log and asks for its oneDNN
    kernels (`inference.runtime.prefer_onednn`).
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
    from inference.outputs import OUTPUT_FORMATS

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pattern", type=str, default=DEFAULT_PATTERN,
                        help="comma-separated glob patterns of the input volumes, relative to the input folder")
    parser.add_argument("--format", type=str, default="same", choices=OUTPUT_FORMATS,
                        help="file format of the label maps: same as each input, or nii.gz, nii, mgz")
    parser.add_argument("--no-qc", dest="qc", action="store_false",
                        help="do not draw the QC picture (axial, coronal, sagittal slices with the labels overlaid)")
    parser.add_argument("--probabilities", action="store_true", default=False,
                        help="also write the per-class probability maps (4D, float32; large)")
    parser.add_argument("--largest-component", action="store_true", default=False,
                        help="keep only the largest connected component of each structure")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for TensorFlow; 0 uses every core the job may use")
    return parser


def bundle_path(name: str) -> Path:
    """A baked-in bundle: ``$BRAINSEG_MODELS_DIR/<name>``, else ``models/<name>`` of the source tree."""
    root = os.environ.get(MODELS_DIR_VARIABLE)
    return Path(root) / name if root else Path(__file__).resolve().parents[1] / "models" / name


def run_plugin(options: argparse.Namespace, inputdir: Path, outputdir: Path, bundle: Path, plugin: str) -> int:
    """Segment every matching volume under ``inputdir`` into the mirrored folder under ``outputdir``.

    Returns:
        0 when every input was segmented; 1 when any failed or none matched (each failure is one
        line on stdout and again on stderr at the end; a failed input leaves no output).
    """
    from inference.batch import segment_files
    from inference.outputs import OutputOptions
    from inference.runtime import configure_threads, import_tensorflow_quietly
    from inference.segmenter import Segmenter

    _log_to_stdout()
    start = time.perf_counter()
    jobs = _jobs(inputdir, outputdir, options.pattern)
    if not jobs:
        return _fail([f"{inputdir}: no input matches --pattern {options.pattern!r}"])
    logger.info("%s: %d input volume(s)", plugin, len(jobs))
    try:
        import_tensorflow_quietly()
        configure_threads(options.threads or None)
        segmenter = Segmenter.from_bundle(bundle)
        output_options = OutputOptions(options.format, options.qc, options.probabilities)
    except ValueError as error:  # BundleError included: the image is broken, not the input
        return _fail([" ".join(str(error).split())])
    results = segment_files(segmenter, jobs, output_options, options.largest_component, {"bundle": bundle.name, "family": segmenter.family, "plugin": plugin})
    failures = [r.error for r in results if r.error is not None]
    found = sorted({v.name for r in results for v in r.volumes if v.voxels})
    logger.info(
        "summary: %d of %d file(s) segmented in %.1f s; structures found: %s",
        len(results) - len(failures), len(results), time.perf_counter() - start, ", ".join(found) or "none",
    )
    return _fail(failures) if failures else 0


def _jobs(inputdir: Path, outputdir: Path, pattern: str) -> list:
    """One job per distinct file matching any pattern (hidden files skipped), outputs mirrored."""
    from inference.batch import SegmentationJob

    found: set[Path] = set()
    for glob in (p.strip() for p in pattern.split(",") if p.strip()):
        found.update(p for p in inputdir.glob(glob) if p.is_file() and not any(s.startswith(".") for s in p.relative_to(inputdir).parts))
    return [SegmentationJob(p, outputdir / p.relative_to(inputdir).parent, str(p.relative_to(inputdir))) for p in sorted(found)]


def _fail(lines: list[str]) -> int:
    logger.error("%d problem(s):", len(lines))
    for line in lines:
        print(line, file=sys.stderr)
    return 1


def _log_to_stdout() -> None:
    """Plugin logs on stdout, one line each, without library debug chatter."""
    root = logging.getLogger()
    if not any(getattr(h, "_brainseg_plugin", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._brainseg_plugin = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
