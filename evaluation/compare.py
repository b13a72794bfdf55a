"""The head-to-head comparison job (`make compare`): both network families and classical baselines, scored alike.

Cases are the held-out test subjects of the embedded dataset, each on its own native grid (voxel size,
axis order), plus one extra case apart from them: the clean MNI152 template itself (noise-free, so out
of the training distribution). Every method segments the native image the way a user would run it:

- the bundles through `inference.segmenter.Segmenter` (conform, normalise, predict, fuse, back to the input grid);
- the classical baselines (`brainseg_tf.baselines`) on the image prepared by the multi-class bundle's
  input contract (`brainseg_tf.preprocessing.InputSpec.prepare`), their classes mapped back by its
  inverse (nearest).

Each method runs in its own fresh process (multiprocessing "spawn"), so the peak resident memory it
reports (``VmHWM``, `brainseg_tf.runtime.peak_rss_bytes`) is that method's alone, runtime included (TensorFlow for the networks).
Scores (`brainseg_tf.scoring`) are computed on the native grid with the affine's voxel sizes.

This package meets training only through the library and the bundle format: it imports `inference`
and `brainseg_tf`, never `training`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_tf.runtime import peak_rss_bytes
from brainseg_tf.config import Config
from brainseg_tf.errors import BrainsegError, ConfigError
from brainseg_tf.io import Image, Volume, voxel_sizes
from brainseg_tf.labels import TISSUE
from brainseg_tf.preprocessing import InputSpec
from brainseg_tf.scoring import class_volume, dice_scores, hausdorff95, volume_difference
from evaluation.report import TEMPLATE_CASE, call_in_fresh_process, finite_or_none, relative_link, render_tables, save_chart, update_doc, write_text

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called with ``done = 0`` when a stage starts, then once after each of
its ``total`` steps. Stages: ``"segmenting"`` (one step per method, each run in its own process) and
``"scoring"`` (one step per label map)."""


@dataclass(frozen=True)
class CompareOptions:
    """What `run_comparison` compares and where it writes.

    Attributes:
        multiclass: multi-class bundle folder.
        ensemble: ensemble bundle folder.
        subjects: score only the first this many test subjects (None: all).
        template: add the extra case of the clean MNI152 template.
        doc: Markdown page; only the part between the compare markers is rewritten.
        chart: PNG chart.
        output_dir: ``results.json`` (raw per-case results) goes here.
        command: the command line, recorded in the page.
    """

    multiclass: Path
    ensemble: Path
    subjects: int | None = None
    template: bool = True
    doc: Path = Path("docs/comparison.md")
    chart: Path = Path("docs/comparison.png")
    output_dir: Path = Path("outputs/compare")
    command: str = "python -m evaluation compare"


@dataclass(frozen=True)
class Method:
    """One compared method: a bundle (``source`` = folder) or a baseline (``source`` = class name)."""

    name: str
    kind: str  # "bundle" | "baseline"
    source: str


@dataclass
class Case:
    """One scored volume: its id, group (``test`` or ``template``), saved image and reference classes."""

    case_id: str
    group: str
    image_file: Path
    reference: np.ndarray = field(repr=False)
    voxel_size: tuple[float, float, float]


def run_comparison(config: Config, options: CompareOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Segment every case with every method, score, and write ``results.json``, the chart and the page.

    Args:
        config: the configuration whose embedded-dataset recipe gives the test subjects.
        options: what to compare and where to write.
        progress: told of each method run and each label map scored (see `Progress`), e.g. for a bar.

    Returns:
        The results as written to ``results.json``.

    Raises:
        BrainsegError: a bundle fails verification or is not of the expected kind, or bad options.
    """
    input_spec = _check_bundles(options)
    methods = _methods(options)
    with tempfile.TemporaryDirectory(prefix="brainseg-compare-") as scratch:
        cases = build_cases(config, options.subjects, options.template, Path(scratch))
        runs = run_methods(methods, input_spec, cases, Path(scratch), progress)
        scores = score_runs(methods, cases, runs, progress)
    results = _results(options, methods, cases, runs, scores)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    write_text(options.output_dir / "results.json", json.dumps(finite_or_none(results), indent=2) + "\n")
    save_chart(results, options.chart)
    update_doc(options.doc, render_tables(results, relative_link(options.chart, options.doc)))
    logger.info("comparison written: %s, %s, %s", options.doc, options.chart, options.output_dir / "results.json")
    return results


def _check_bundles(options: CompareOptions) -> InputSpec:
    """Verify both bundles; return the multi-class input contract (the baselines preprocess with it)."""
    from brainseg_tf.bundle import read_bundle_info

    if options.subjects is not None and options.subjects < 1:
        raise BrainsegError(f"Expected --subjects N >= 1. Received: {options.subjects}")
    multiclass, ensemble = read_bundle_info(options.multiclass), read_bundle_info(options.ensemble)
    if multiclass.kind != "model" or multiclass.family != "multiclass":
        raise BrainsegError(f"Expected a multi-class model bundle at {options.multiclass}. Received: {multiclass.kind} {multiclass.family}")
    if ensemble.kind != "ensemble":
        raise BrainsegError(f"Expected an ensemble bundle at {options.ensemble}. Received: kind {ensemble.kind}")
    for info in (multiclass, ensemble):
        if info.label_set != TISSUE:
            raise BrainsegError(f"Expected bundles of the tissue label set. Received: {info.label_set.name} at {info.path}")
    return multiclass.input_spec


def _methods(options: CompareOptions) -> list[Method]:
    return [
        Method("multi-class (softmax U-Net)", "bundle", str(options.multiclass)),
        Method("ensemble (3 sigmoid U-Nets)", "bundle", str(options.ensemble)),
        Method("Gaussian mixture (intensity)", "baseline", "GaussianMixtureTissue"),
        Method("k-means (intensity)", "baseline", "KMeansTissue"),
    ]


def build_cases(config: Config, subjects: int | None, template: bool, folder: Path) -> list[Case]:
    """Synthesise the test subjects (the first ``subjects`` of them) and, if asked, add the template case.

    Images are saved to ``folder`` (workers read them from there); reference classes stay in memory.
    """
    from brainseg_tf.datasets import embedded

    recipe = config.data.embedded
    mni = embedded.load_template(recipe.template_voxel_size)
    tests = [(index, case_id) for index, (case_id, split) in enumerate(embedded.subject_ids(recipe)) if split == "test"]
    if not tests:
        raise ConfigError("Expected at least one test subject. Received: data.embedded.n_test = 0")
    cases = []
    for index, case_id in tests[:subjects]:
        image, label_map = embedded.synthesize_subject(mni, index, recipe)
        cases.append(_case(case_id, "test", image, TISSUE.to_classes(label_map.array), folder))
    if template:
        labels = embedded.tissue_labels(mni.gray_matter, mni.white_matter, mni.brain_mask)
        cases.append(_case(TEMPLATE_CASE, "template", mni.image, TISSUE.to_classes(labels), folder))
    logger.info("cases: %s", ", ".join(c.case_id for c in cases))
    return cases


def _case(case_id: str, group: str, image: Volume, reference: np.ndarray, folder: Path) -> Case:
    image_file = folder / f"{case_id}.npz"
    np.savez(image_file, array=image.array, affine=image.affine)
    sizes = tuple(float(s) for s in voxel_sizes(image.affine))
    return Case(case_id, group, image_file, reference.astype(np.uint8), sizes)  # type: ignore[arg-type]


def run_methods(
    methods: list[Method], input_spec: InputSpec, cases: list[Case], folder: Path, progress: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """Run each method on every case, one fresh process per method; label maps go under ``folder/method-<n>``.

    Returns:
        Method name -> its run (see `run_in_fresh_process`).
    """
    runs = {}
    _tell(progress, "segmenting", 0, len(methods))
    for number, method in enumerate(methods):
        runs[method.name] = run_in_fresh_process(method, input_spec, cases, folder / f"method-{number}")
        _tell(progress, "segmenting", number + 1, len(methods))
    return runs


def score_runs(
    methods: list[Method], cases: list[Case], runs: dict[str, dict[str, Any]], progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Score every method's label map of every case against the case's reference (see `score_case`).

    Returns:
        One score row per method and case, methods in order, each method's cases in order.
    """
    pairs = [(method, case) for method in methods for case in cases]
    logger.info("scoring %d label maps", len(pairs))
    scores = []
    _tell(progress, "scoring", 0, len(pairs))
    for done, (method, case) in enumerate(pairs, start=1):
        scores.append(score_case(method.name, case, np.load(runs[method.name]["labels"][case.case_id])))
        _tell(progress, "scoring", done, len(pairs))
    return scores


def _tell(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def run_in_fresh_process(method: Method, input_spec: InputSpec, cases: list[Case], folder: Path) -> dict[str, Any]:
    """Run one method on every case in a new spawned process; label maps are saved under ``folder``.

    Returns:
        ``seconds`` (per case), ``import_seconds``, ``load_seconds``, ``peak_rss_kib`` of that
        process, and ``labels``: case id -> saved ``.npy`` file of class indices on the native grid.
    """
    folder.mkdir(parents=True)
    logger.info("%s: segmenting %d case(s) in a fresh process", method.name, len(cases))
    images = {c.case_id: str(c.image_file) for c in cases}
    run = call_in_fresh_process(_method_worker, method, input_spec, images, str(folder))
    logger.info("%s: median %.1f s per volume, peak RSS %.0f MiB", method.name, np.median(list(run["seconds"].values())), run["peak_rss_kib"] / 1024)
    return run


def _method_worker(method: Method, input_spec: InputSpec, images: dict[str, str], folder: str) -> dict[str, Any]:
    """In the fresh process: load the method, segment each image, save labels, report times and peak RSS."""
    started = time.perf_counter()
    if method.kind == "bundle":
        from brainseg_tf.runtime import import_tensorflow_quietly, prefer_onednn

        prefer_onednn()  # as `python -m inference` and the plugins run
        import_tensorflow_quietly()  # the runtime's import is timed apart from the model load
        from inference.segmenter import Segmenter

        imported = time.perf_counter()
        segment = _bundle_segmenter(Segmenter.from_bundle(method.source))
    else:
        import brainseg_tf.baselines as baselines

        imported = time.perf_counter()
        segment = _baseline_segmenter(getattr(baselines, method.source)(), input_spec)
    loaded = time.perf_counter()
    seconds, labels = {}, {}
    for case_id, image_file in images.items():
        with np.load(image_file) as saved:
            image = Image(saved["array"], saved["affine"])
        classes, seconds[case_id] = segment(image)
        labels[case_id] = os.path.join(folder, f"{case_id}.npy")
        np.save(labels[case_id], classes)
    peak = peak_rss_bytes() // 1024  # KiB
    return {"seconds": seconds, "labels": labels, "import_seconds": imported - started, "load_seconds": loaded - imported, "peak_rss_kib": peak}


def _bundle_segmenter(segmenter: Any) -> Any:
    def segment(image: Image) -> tuple[np.ndarray, float]:
        segmentation = segmenter.segment(image)
        return segmentation.labels.array, segmentation.seconds

    return segment


def _baseline_segmenter(classifier: Any, input_spec: InputSpec) -> Any:
    """Prepare by the networks' input contract, classify, map back (nearest); timed alike."""

    def segment(image: Image) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        prepared = input_spec.prepare(image)
        classes = prepared.inverse(classifier.fit_predict(prepared.array), "nearest").array
        return classes, time.perf_counter() - start

    return segment


def score_case(method: str, case: Case, labels: np.ndarray) -> dict[str, Any]:
    """Per class: Dice, HD95 (mm), absolute volume difference, reference and predicted volumes (mm^3)."""
    labels, reference, sizes = np.asarray(labels), case.reference, case.voxel_size
    dice = dice_scores(labels, reference, TISSUE.foreground_classes)
    metrics = {
        "dice": lambda c: dice[c],
        "hd95_mm": lambda c: hausdorff95(labels, reference, c, sizes),
        "volume_difference_mm3": lambda c: volume_difference(labels, reference, c, sizes),
        "reference_volume_mm3": lambda c: class_volume(reference, c, sizes),
        "predicted_volume_mm3": lambda c: class_volume(labels, c, sizes),
    }
    scored = {metric: {TISSUE.names[c]: value(c) for c in TISSUE.foreground_classes} for metric, value in metrics.items()}
    return {"method": method, "case": case.case_id, "group": case.group, **scored}


def count_parameters(bundle: str | os.PathLike[str]) -> int:
    """Trainable and non-trainable parameters of a model bundle, summed over an ensemble's members."""
    from brainseg_tf.bundle import load_keras_model, read_bundle_info

    info = read_bundle_info(bundle)
    paths = [member.path for member in info.members] or [info.path]
    return int(sum(load_keras_model(path).count_params() for path in paths))


def _results(options: CompareOptions, methods: list[Method], cases: list[Case], runs: dict, scores: list[dict]) -> dict[str, Any]:
    from brainseg_tf import baselines

    described = []
    for method in methods:
        run = {k: v for k, v in runs[method.name].items() if k != "labels"}
        if method.kind == "bundle":
            parameters, note = count_parameters(method.source), "trained once"
        else:
            parameters, note = getattr(baselines, method.source).fitted_parameters, "fitted per volume"
        described.append({**asdict(method), "parameters": parameters, "parameters_note": note, **run})
    return {
        "command": options.command,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": environment(),
        "cases": [{"case": c.case_id, "group": c.group, "shape": list(c.reference.shape), "voxel_size_mm": list(c.voxel_size)} for c in cases],
        "methods": described,
        "scores": scores,
        "notes": "hd95_mm is null where a class is in exactly one of prediction and reference (infinite distance)",
    }


def environment() -> dict[str, Any]:
    """Versions of the packages that set the numbers, and the machine's cores."""
    versions = {"python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"versions": versions, "cpu_cores": cores, "machine": f"{platform.system()} {platform.machine()}"}


