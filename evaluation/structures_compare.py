"""Structures bundles against the atlas-recall baselines, per structure (`make compare-structures`).

Cases are the held-out test subjects of the embedded structures dataset (split by subject: never trained or
validated on), each twice:

- ``stripped``: the subject as the cache holds it (skull-stripped: exact zeros outside the brain, on the cache's
  RAS+ grid);
- ``full head``: a synthetic full head grown around the same brain (`synthetic_heads.synthesize_head_subject` with
  its structures: each structure imaged with a contrast of its own, T1-like priors, 1 mm, no thick slices), seeded by
  ``[seed, HEAD_CASE_STREAM, index]``, a stream no training run draws.

Methods: the atlas recalled two ways (`brainseg_tf.atlas_recall`: ``placed`` in MNI mm, and ``moments`` onto the
brain mask, which comes from the image itself: its nonzero region when stripped, else the extraction of the first
bundle that carries an extractor), then each bundle through `inference.segmenter.Segmenter`. Scores per structure:
Dice, HD95 (mm) and the volume difference relative to the reference; seconds per case for the bundles.

This package meets training only through the library and the bundle format: it never imports `training`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_tf.atlas_recall import recall_atlas
from brainseg_tf.bundle import read_bundle_info
from brainseg_tf.config import Config, GeneratorConfig
from brainseg_tf.errors import ConfigError
from brainseg_tf.io import Image, LabelMap, voxel_sizes
from brainseg_tf.labels import STRUCTURES
from brainseg_tf.scoring import class_volume, dice_scores, hausdorff95
from evaluation.report import finite_or_none, update_doc, write_text

logger = logging.getLogger(__name__)

STRUCTURES_MARKERS = ("<!-- structures:begin -->", "<!-- structures:end -->")
HEAD_CASE_STREAM = 17
"""Middle entry of a full-head case's seed: apart from every training stream."""
SUBCORTICAL = tuple(f"{side}-{name}" for side in ("Left", "Right")
                    for name in ("Thalamus", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "Accumbens-area", "VentralDC"))
"""The subcortical structures the issue's goal averages over (mean Dice >= 0.80)."""
ATLAS_METHODS = ("atlas placed", "atlas moments")


@dataclass(frozen=True)
class StructuresOptions:
    """What `run_structures_comparison` compares and where it writes.

    Attributes:
        bundles: segmenter bundles on the ``structures`` label set (multi-class and/or ensemble).
        subjects: only the first this many test subjects (None: all).
        heads: also score a full head grown around each test brain.
        seed: seed of the full heads.
        doc: Markdown page; only the part between `STRUCTURES_MARKERS` is rewritten.
        output_dir: ``results.json`` goes here.
        command: the command line, recorded in the page.
    """

    bundles: tuple[Path, ...]
    subjects: int | None = None
    heads: bool = True
    seed: int = 0
    doc: Path = Path("docs/structures.md")
    output_dir: Path = Path("outputs/compare-structures")
    command: str = "python -m evaluation compare-structures"


@dataclass
class StructureCase:
    """One scored volume: the image, its reference ``STRUCTURES`` classes on its grid, its kind."""

    name: str
    kind: str  # "stripped" | "full head"
    image: Image
    reference: np.ndarray = field(repr=False)


def structure_cases(config: Config, subjects: int | None, heads: bool, seed: int) -> Iterator[StructureCase]:
    """The held-out structures test subjects, stripped and (with ``heads``) as full heads, lazily.

    Raises:
        ConfigError: ``config`` does not give the structures cache.
    """
    from brainseg_tf.datasets import build_cache
    from brainseg_tf.datasets.cache import read_subjects
    from brainseg_tf.datasets.synthetic_heads import on_head_grid, synthesize_head_subject, tissue_of_structure_classes

    if config.data.label_set != STRUCTURES.name:
        raise ConfigError(f"Expected data.label_set structures for the structures comparison. Received: {config.data.label_set!r}")
    tests = read_subjects(build_cache(config), "test")[:subjects]
    generator = _head_generator()
    for index, subject in enumerate(tests):
        structures = LabelMap(np.asarray(subject.classes, np.int32), subject.affine)
        yield StructureCase(f"{subject.subject_id}-stripped", "stripped", Image(subject.image, subject.affine), structures.array)
        if heads:
            tissue = structures.with_array(tissue_of_structure_classes(structures.array))
            image, labels = synthesize_head_subject(tissue, np.random.default_rng([seed, HEAD_CASE_STREAM, index]), generator, structures=structures)
            yield StructureCase(f"{subject.subject_id}-full-head", "full head", image, on_head_grid(structures, labels))


def _head_generator() -> GeneratorConfig:
    generator = GeneratorConfig()
    synthesis = dataclasses.replace(generator.synthesis, prior_probability=1.0, thick_slice_probability=0.0)
    return dataclasses.replace(generator, synthesis=synthesis)


def run_structures_comparison(config: Config, options: StructuresOptions) -> dict[str, Any]:
    """Segment every case with every method, score per structure, write ``results.json`` and the page's section.

    Raises:
        BrainsegError: a bundle fails verification; ConfigError: a bundle not on the structures label set, or none.
    """
    from brainseg_tf.datasets import embedded
    from brainseg_tf.datasets.structures import structures_on_template
    from inference.segmenter import Segmenter

    if not options.bundles:
        raise ConfigError("Expected at least one structures bundle to compare. Received: none")
    infos = [read_bundle_info(path) for path in options.bundles]
    for info in infos:
        if info.label_set.name != STRUCTURES.name:
            raise ConfigError(f"Expected bundles on the structures label set. Received: {info.label_set.name!r} in {info.path}")
    segmenters = {f"{_bundle_name(info.path)} ({info.family.value})": Segmenter.from_bundle(info.path) for info in infos}
    atlas = structures_on_template(embedded.load_template(1.0))
    atlas_classes = LabelMap(STRUCTURES.to_classes(np.asarray(atlas.array)), atlas.affine)
    methods = [*ATLAS_METHODS, *segmenters]
    rows: list[dict[str, Any]] = []
    for case in structure_cases(config, options.subjects, options.heads, options.seed):
        predictions, seconds, mask = {}, {}, _nonzero_brain(case.image.array) if case.kind == "stripped" else None
        for name, segmenter in segmenters.items():
            start = time.perf_counter()
            segmentation = segmenter.segment(case.image)
            seconds[name] = time.perf_counter() - start
            predictions[name] = np.asarray(segmentation.labels.array)
            if mask is None and segmentation.brain is not None:
                mask = np.asarray(segmentation.brain.mask.array) > 0
        predictions["atlas placed"] = recall_atlas(atlas_classes, case.image.shape, case.image.affine, "placed").array
        if mask is not None:
            predictions["atlas moments"] = recall_atlas(atlas_classes, case.image.shape, case.image.affine, "moments", mask).array
        for method, predicted in predictions.items():
            rows.append({"case": case.name, "kind": case.kind, "method": method, "seconds": seconds.get(method),
                         "structures": _scores(predicted, case.reference, voxel_sizes(case.image.affine))})
        logger.info("%s: %s", case.name, ", ".join(f"{m} {_mean(rows[-len(predictions) + i], 'dice'):.3f}" for i, m in enumerate(predictions)))
    results = {"command": options.command, "methods": methods, "rows": rows,
               "bundles": {name: str(info.path) for name, info in zip(segmenters, infos)}}
    options.output_dir.mkdir(parents=True, exist_ok=True)
    write_text(options.output_dir / "results.json", json.dumps(finite_or_none(results), indent=1) + "\n")
    update_doc(options.doc, render_structures(results), STRUCTURES_MARKERS)
    return results


def _bundle_name(path: Path) -> str:
    """A bundle's name in the tables: its folder's, or its run's when the folder is a run's ``bundle``."""
    return path.parent.name if path.name == "bundle" and path.parent.name else path.name


def _nonzero_brain(image: np.ndarray) -> np.ndarray:
    """A stripped image's brain: the largest connected nonzero region, holes filled (as inference takes it)."""
    from inference.extraction import largest_filled_component

    return largest_filled_component(np.asarray(image) != 0)[0]


def _scores(predicted: np.ndarray, reference: np.ndarray, sizes: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """Dice, HD95 (mm) and relative volume difference of every foreground structure."""
    classes = list(STRUCTURES.foreground_classes)
    dice = dice_scores(predicted, reference, classes)
    scores = {}
    for index in classes:
        truth = class_volume(reference, index, sizes)
        volume = (class_volume(predicted, index, sizes) - truth) / truth if truth > 0 else float("nan")
        scores[STRUCTURES.names[index]] = {"dice": float(dice[index]), "hd95": hausdorff95(predicted, reference, index, sizes), "volume": volume}
    return scores


def _mean(row: dict[str, Any], metric: str, names: tuple[str, ...] | None = None) -> float:
    values = [s[metric] for name, s in row["structures"].items() if names is None or name in names]
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def render_structures(results: dict[str, Any]) -> str:
    """The page's section: per kind of case, mean Dice per structure and method, summary rows, seconds."""
    lines = [f"Generated by `{results['command']}`; cases: {len({r['case'] for r in results['rows']})}. Dice is the mean over cases; "
             "\"atlas moments\" is the baseline every network must beat on every structure."]
    for kind in ("stripped", "full head"):
        kind_rows = [r for r in results["rows"] if r["kind"] == kind]
        if not kind_rows:
            continue
        methods = [m for m in results["methods"] if any(r["method"] == m for r in kind_rows)]
        by_method = {m: [r for r in kind_rows if r["method"] == m] for m in methods}
        mean = {m: {name: float(np.nanmean([r["structures"][name]["dice"] for r in rs])) for name in STRUCTURES.names[1:]} for m, rs in by_method.items()}
        lines += ["", f"**{kind}** ({len(by_method[methods[0]])} cases), Dice per structure:", "",
                  "| structure | " + " | ".join(methods) + " |", "| --- |" + " ---: |" * len(methods)]
        for name in STRUCTURES.names[1:]:
            lines.append(f"| {name} | " + " | ".join(f"{mean[m][name]:.3f}" for m in methods) + " |")
        lines.append("| **mean, all 32** | " + " | ".join(f"{np.mean(list(mean[m].values())):.3f}" for m in methods) + " |")
        lines.append("| **mean, subcortical 16** | " + " | ".join(f"{np.mean([mean[m][n] for n in SUBCORTICAL]):.3f}" for m in methods) + " |")
        baseline = mean.get("atlas moments")
        if baseline:
            lines.append("| structures above atlas moments | " + " | ".join(
                f"{sum(mean[m][n] > baseline[n] for n in baseline)} / 32" for m in methods) + " |")
        lines.append("| median HD95, subcortical (mm) | " + " | ".join(
            f"{np.nanmedian([r['structures'][n]['hd95'] if r['structures'][n]['hd95'] is not None else np.inf for r in by_method[m] for n in SUBCORTICAL]):.1f}" for m in methods) + " |")
        lines.append("| seconds per case (median) | " + " | ".join(
            "-" if by_method[m][0]["seconds"] is None else f"{np.median([r['seconds'] for r in by_method[m]]):.1f}" for m in methods) + " |")
    return "\n".join(lines) + "\n"
