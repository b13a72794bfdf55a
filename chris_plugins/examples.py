"""Each plugin's worked example: a small synthetic head in ``examples/incoming``, the plugin's outputs in ``examples/outgoing``.

``python -m chris_plugins.examples regenerate`` rewrites both folders of every plugin: the input is a
full synthetic head (`brainseg_tf.datasets.synthetic_heads`) grown around the MNI152 brain of the
embedded dataset, with a T1-like contrast, at 3 mm (small enough for the repository), and the outputs
are what each plugin writes when run on it as ChRIS runs it (``<python> <selfpath>/<selfexec>
incoming outgoing``, default flags). Run it again whenever the models or the inference change, and
commit the result. ``python -m chris_plugins.examples check`` runs each plugin on its ``incoming``
into a temporary folder and compares with ``outgoing`` (`compare_outgoing`); so does
``tests/test_examples.py``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from chris_plugins.descriptors import PLUGINS, Plugin

EXAMPLE_FILE = "synthetic_head_T1w.nii.gz"
EXAMPLE_SEED = 7
TEMPLATE_VOXEL_MM = 2.0  # the head is grown and imaged at 2 mm ...
EXAMPLE_VOXEL_MM = 3.0  # ... then resampled to 3 mm: about 0.4 MB as gzipped uint8
TIMING_KEY = re.compile(r"second|time|duration|elapsed|date", re.IGNORECASE)
"""JSON keys and CSV columns left out of the comparison: they differ from run to run."""
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz")
PROBABILITY_TOLERANCE = 1e-4
"""Largest difference allowed between float volumes (probability maps) of two runs."""


def example_folder(plugin: Plugin, root: Path | None = None) -> Path:
    """``<root>/<plugin>/examples`` (root: the ``chris_plugins`` folder of this checkout by default)."""
    return (root or plugin.folder.parent) / plugin.name / "examples"


def run_plugin(selfexec: str, inputdir: Path, outputdir: Path) -> int:
    """``<python> <selfpath>/<selfexec> INPUTDIR OUTPUTDIR`` as ChRIS runs it, selfpath being this Python's bin folder."""
    command = [sys.executable, str(Path(sys.executable).parent / selfexec), str(inputdir), str(outputdir)]
    print(f"$ {' '.join(command)}", flush=True)
    return subprocess.run(command, check=False).returncode


def example_head(seed: int = EXAMPLE_SEED) -> nib.Nifti1Image:
    """The example input: a synthetic T1-like full head around the MNI152 brain, uint8 on a 3 mm RAS+ grid."""
    from brainseg_tf.config import GeneratorConfig
    from brainseg_tf.datasets import embedded
    from brainseg_tf.datasets.synthetic_heads import synthesize_head_subject
    from brainseg_tf.geometry import conform
    from brainseg_tf.io import LabelMap

    template = embedded.load_template(TEMPLATE_VOXEL_MM)
    brain = embedded.tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)
    config = GeneratorConfig()
    t1_like = dataclasses.replace(config.synthesis, prior_probability=1.0, thick_slice_probability=0.0, snr_range=(30.0, 30.0))
    image, _ = synthesize_head_subject(LabelMap(brain, template.image.affine), np.random.default_rng(seed),
                                       dataclasses.replace(config, synthesis=t1_like))
    coarse, _ = conform(image, EXAMPLE_VOXEL_MM)
    bright = float(np.percentile(coarse.array[coarse.array > 0], 99.5))
    stored = np.clip(np.round(coarse.array / bright * 200.0), 0, 255).astype(np.uint8)  # as a scanner stores integers
    result = nib.Nifti1Image(stored, coarse.affine)
    result.set_qform(coarse.affine, code=1)
    result.set_sform(coarse.affine, code=1)
    result.header.set_xyzt_units("mm")
    return result


def regenerate(plugins: tuple[Plugin, ...] = PLUGINS, root: Path | None = None) -> int:
    """Rewrite ``examples/incoming`` and ``examples/outgoing`` of each plugin; the first failing plugin's status."""
    head = example_head()
    for plugin in plugins:
        folder = example_folder(plugin, root)
        for sub in ("incoming", "outgoing"):
            shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / "incoming").mkdir(parents=True)
        nib.save(head, folder / "incoming" / EXAMPLE_FILE)
        status = run_plugin(plugin.module, folder / "incoming", folder / "outgoing")
        if status != 0:
            print(f"{plugin.name}: exit status {status}; {folder / 'outgoing'} is incomplete", file=sys.stderr)
            return status
        print(f"wrote {folder / 'incoming'} and {folder / 'outgoing'}")
    return 0


def relative_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def compare_outgoing(expected: Path, actual: Path) -> list[str]:
    """How ``actual`` differs from ``expected``, one line per problem; empty when they agree.

    The same file names; volumes with the same shape and affine, integer ones (label maps) equal
    voxel for voxel, float ones within `PROBABILITY_TOLERANCE`; JSON and CSV equal but for timing
    fields (`TIMING_KEY`); PNG pictures of the same size; any other file byte for byte.
    """
    names, found = relative_files(expected), relative_files(actual)
    if names != found:
        return [f"files differ: missing {sorted(set(names) - set(found))}, unexpected {sorted(set(found) - set(names))}"]
    problems = []
    for name in names:
        problem = _compare_file(expected / name, actual / name)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def _compare_file(expected: Path, actual: Path) -> str | None:
    name = expected.name
    if name.endswith(VOLUME_SUFFIXES):
        return _compare_volumes(nib.load(expected), nib.load(actual))
    if name.endswith(".json"):
        left, right = (_without_timings(json.loads(p.read_text())) for p in (expected, actual))
        if left == right:
            return None
        if isinstance(left, dict) and isinstance(right, dict):
            fields = sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))
            return "fields differ: " + "; ".join(f"{k}: expected {left.get(k)!r}. Received: {right.get(k)!r}" for k in fields)
        return f"expected {left!r}. Received: {right!r}"
    if name.endswith(".csv"):
        left, right = (_csv_without_timings(p) for p in (expected, actual))
        return None if left == right else f"expected rows {left}. Received: {right}"
    if name.endswith(".png"):
        left, right = (_png_size(p) for p in (expected, actual))
        return None if left == right else f"expected a {left[0]}x{left[1]} picture. Received: {right[0]}x{right[1]}"
    return None if expected.read_bytes() == actual.read_bytes() else "contents differ"


def _compare_volumes(expected: Any, actual: Any) -> str | None:
    if expected.shape != actual.shape or not np.allclose(expected.affine, actual.affine, atol=1e-5):
        return f"expected shape {expected.shape} and affine {expected.affine.tolist()}. Received: {actual.shape}, {actual.affine.tolist()}"
    left, right = np.asanyarray(expected.dataobj), np.asanyarray(actual.dataobj)
    if np.issubdtype(left.dtype, np.integer) and np.issubdtype(right.dtype, np.integer):
        differing = int(np.count_nonzero(left != right))
        return f"{differing} of {left.size} voxels differ" if differing else None
    largest = float(np.max(np.abs(left.astype(np.float64) - right.astype(np.float64)), initial=0.0))
    return f"values differ by up to {largest:.3g} (tolerance {PROBABILITY_TOLERANCE})" if largest > PROBABILITY_TOLERANCE else None


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not TIMING_KEY.search(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _csv_without_timings(path: Path) -> list[list[str]]:
    rows = list(csv.reader(path.read_text().splitlines()))
    keep = [i for i, column in enumerate(rows[0] if rows else []) if not TIMING_KEY.search(column)]
    return [[row[i] for i in keep if i < len(row)] for row in rows]


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (0x0 for anything that is not a PNG)."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return (0, 0)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def check(plugins: tuple[Plugin, ...] = PLUGINS, root: Path | None = None) -> int:
    """Run each plugin on its ``incoming`` into a temporary folder and compare with ``outgoing``; 1 on a difference."""
    status = 0
    for plugin in plugins:
        folder = example_folder(plugin, root)
        with tempfile.TemporaryDirectory(prefix=f"{plugin.name}-") as scratch:
            code = run_plugin(plugin.module, folder / "incoming", Path(scratch) / "outgoing")
            problems = [f"exit status {code}"] if code else compare_outgoing(folder / "outgoing", Path(scratch) / "outgoing")
        for problem in problems:
            print(f"{plugin.name}: {problem}", file=sys.stderr)
        print(f"{plugin.name}: {'differs from' if problems else 'matches'} {folder / 'outgoing'}")
        status = status or int(bool(problems))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chris_plugins.examples", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("regenerate", "check"), help="rewrite the examples, or compare a fresh run with them")
    parser.add_argument("--plugin", action="append", choices=[p.name for p in PLUGINS], help="only this plugin (repeatable; default: all)")
    args = parser.parse_args(argv)
    plugins = tuple(p for p in PLUGINS if not args.plugin or p.name in args.plugin)
    return regenerate(plugins) if args.action == "regenerate" else check(plugins)


if __name__ == "__main__":
    sys.exit(main())
