"""Build (or reuse) the HDF5 cache for the configured data source: embedded, manifest or FreeSurfer."""

from __future__ import annotations

import dataclasses
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from brainseg_tf.config import Config, EmbeddedDatasetConfig, PreprocessConfig
from brainseg_tf.datasets import embedded, structures
from brainseg_tf.datasets.cache import Subject, cache_path, read_info, write_cache
from brainseg_tf.datasets.prepare import prepare_subject
from brainseg_tf.datasets.sources import SourceRecord, assign_splits, discover_freesurfer, read_manifest
from brainseg_tf.errors import DatasetError
from brainseg_tf.io import load_image, load_label_map
from brainseg_tf.labels import STRUCTURES, TISSUE, LabelSet, UnknownPolicy, get_label_set

logger = logging.getLogger(__name__)


Progress = Callable[[int, int], None]
"""``progress(done, total)``: called with ``done = 0`` when a build starts, then once after each of its
``total`` subjects is written (the library reports; entry points draw bars)."""


def build_cache(config: Config, rebuild: bool = False, workers: int | None = None, progress: Progress | None = None) -> Path:
    """Return the cache file for ``config.data``, building it when missing, stale or ``rebuild``.

    Args:
        config: the run's configuration (data source, label set, preprocessing).
        rebuild: build even when a cache with the same recipe exists.
        workers: processes preparing subjects in parallel (default: CPU count, at most 4).
        progress: told of each subject written (see `Progress`); not called when the cache is reused.

    Raises:
        DatasetError: the source is misconfigured or a subject cannot be prepared.
    """
    name, recipe, tasks = _plan(config)
    path = cache_path(config.data.resolved_cache_dir(), name, recipe)
    if path.is_file() and not rebuild:
        read_info(path)  # refuses a foreign or damaged file instead of training on it
        logger.info("reusing cache %s", path)
        return path
    logger.info("building %s cache: %d subjects -> %s", name, len(tasks), path)
    return write_cache(path, _reported(_run(tasks, workers), len(tasks), progress), get_label_set(config.data.label_set), recipe)


def _plan(config: Config) -> tuple[str, dict[str, Any], list[Callable[[], Subject]]]:
    """The cache name, its recipe (what the cache depends on) and one task per subject."""
    data, preprocess = config.data, config.preprocess
    common = {"preprocess": dataclasses.asdict(preprocess), "label_set": data.label_set}
    if data.source == "embedded":
        if data.label_set not in (TISSUE.name, STRUCTURES.name):
            raise DatasetError(
                f"The embedded dataset has tissue or structures labels. Expected label_set 'tissue' or 'structures'. Received: {data.label_set!r}"
            )
        tissue = data.label_set == TISSUE.name
        version = embedded.RECIPE_VERSION if tissue else [embedded.RECIPE_VERSION, structures.STRUCTURES_RECIPE_VERSION]
        recipe = {**common, "source": "embedded", "synthesis_version": version, "embedded": dataclasses.asdict(data.embedded)}
        subject = _embedded_subject if tissue else _structures_subject
        tasks = [
            functools.partial(subject, index, subject_id, split, data.embedded, preprocess)
            for index, (subject_id, split) in enumerate(embedded.subject_ids(data.embedded))
        ]
        return "embedded" if tissue else "embedded-structures", recipe, tasks
    records = _user_records(config)
    recipe = {
        **common,
        "source": data.source,
        "unknown_labels": data.unknown_labels,
        "files": [[r.subject_id, str(r.image), _stamp(r.image), str(r.label), _stamp(r.label), r.split] for r in records],
    }
    label_set = get_label_set(data.label_set)
    tasks = [functools.partial(_user_subject, r, label_set, preprocess, data.unknown_labels) for r in records]
    return data.source, recipe, tasks


def _user_records(config: Config) -> list[SourceRecord]:
    data = config.data
    if data.source == "manifest":
        if not data.manifest:
            raise DatasetError("data.source is 'manifest' but data.manifest is not set")
        records = read_manifest(data.manifest)
    else:
        if not data.subjects_dir:
            raise DatasetError("data.source is 'freesurfer' but data.subjects_dir is not set")
        records = discover_freesurfer(data.subjects_dir)
    return assign_splits(records, data.val_fraction, data.test_fraction, config.generator.seed)


def _run(tasks: list[Callable[[], Subject]], workers: int | None) -> Iterator[Subject]:
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(tasks) <= 1:
        yield from (task() for task in tasks)
        return
    # spawn: safe even when TensorFlow (threads) is already loaded in the parent.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_call, tasks)


def _reported(subjects: Iterator[Subject], total: int, progress: Progress | None) -> Iterator[Subject]:
    """The subjects, telling ``progress`` once at the start and again as the consumer asks for the next one."""
    if progress is not None:
        progress(0, total)
    for done, subject in enumerate(subjects, start=1):
        yield subject  # the consumer writes it before asking for the next
        if progress is not None:
            progress(done, total)


def _call(task: Callable[[], Subject]) -> Subject:
    return task()


@functools.lru_cache(maxsize=2)
def _template(voxel_size: float) -> embedded.Template:
    return embedded.load_template(voxel_size)


def _embedded_subject(index: int, subject_id: str, split: str, recipe: EmbeddedDatasetConfig, preprocess: PreprocessConfig) -> Subject:
    image, label_map = embedded.synthesize_subject(_template(recipe.template_voxel_size), index, recipe)
    return prepare_subject(subject_id, image, label_map, TISSUE, preprocess, split)  # type: ignore[arg-type]


def _structures_subject(index: int, subject_id: str, split: str, recipe: EmbeddedDatasetConfig, preprocess: PreprocessConfig) -> Subject:
    template = _template(recipe.template_voxel_size)
    image, label_map = structures.synthesize_structures_subject(template, structures.structures_on_template(template), index, recipe)
    return prepare_subject(subject_id, image, label_map, STRUCTURES, preprocess, split)  # type: ignore[arg-type]


def _user_subject(record: SourceRecord, label_set: LabelSet, preprocess: PreprocessConfig, unknown: UnknownPolicy) -> Subject:
    image = load_image(record.image, preprocess.max_voxels)
    label_map = load_label_map(record.label, preprocess.max_voxels)
    return prepare_subject(record.subject_id, image, label_map, label_set, preprocess, record.split or "train", unknown)


def _stamp(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]
