"""Segment many files with one segmenter: each input independently, failures collected, not raised."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainseg_tf.errors import BundleError, PathError, VolumeError
from inference.outputs import OutputOptions, StructureVolume, output_paths, structure_volumes, write_outputs
from inference.segmenter import Segmenter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationJob:
    """One input volume and where its outputs go.

    Attributes:
        input: the image file.
        output_dir: the folder its outputs are written to.
        name: how logs and reports call it (e.g. its path relative to the input folder).
    """

    input: Path
    output_dir: Path
    name: str


@dataclass(frozen=True)
class JobResult:
    """What became of one job: its outputs and volumes, or the one-line error."""

    job: SegmentationJob
    outputs: list[Path] = field(default_factory=list)
    volumes: list[StructureVolume] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def planned_outputs(jobs: Sequence[SegmentationJob], options: OutputOptions) -> dict[Path, SegmentationJob]:
    """Every output path of every job, checked for collisions before anything runs (jobs whose input
    has no volume suffix are left out: they will fail on their own).

    Raises:
        ValueError: two jobs would write the same file (e.g. ``a.nii`` and ``a.nii.gz`` in one folder).
    """
    owners: dict[Path, SegmentationJob] = {}
    for job in jobs:
        try:
            paths = output_paths(job.input, job.output_dir, options)
        except VolumeError:
            continue  # not a volume name: that job fails alone, with its own one-line error
        for path in paths.values():
            if path in owners:
                raise ValueError(f"Expected one input per output. Received: {owners[path].name} and {job.name} both write {path}")
            owners[path] = job
    return owners


def segment_files(
    segmenter: Segmenter,
    jobs: Sequence[SegmentationJob],
    options: OutputOptions,
    largest_component: bool = False,
    model: dict[str, Any] | None = None,
    on_result: Callable[[int, JobResult], None] | None = None,
) -> list[JobResult]:
    """Segment each job's input and write its outputs; a failing input never stops the others.

    An input that fails (unreadable, malformed, no contrast, a write refused) leaves no output of
    its own (`write_outputs` is all-or-nothing); its error is the one line in `JobResult.error`.
    A fault of the model (`BundleError`, e.g. a network whose outputs do not fit its contract) is
    no input's fault and would fail every input alike: it stops the run and is raised, naming the
    bundle; the outputs of the inputs done before it stay.

    Args:
        segmenter: the loaded segmenter.
        jobs: inputs and output folders (see `planned_outputs` to check them first).
        options: which outputs, which format.
        largest_component: keep each class's largest connected component only.
        model: recorded in each volumes JSON (bundle name, family).
        on_result: called after each job with its position (1-based) and result, e.g. for progress.

    Returns:
        One result per job, in order.

    Raises:
        BundleError: the model failed, not an input.
    """
    results = []
    for position, job in enumerate(jobs, start=1):
        result = _run_job(segmenter, job, options, largest_component, model)
        if result.ok:
            found = ", ".join(f"{v.name} {v.volume_mm3 / 1000:.1f} mL" for v in result.volumes)
            logger.info("[%d/%d] %s: %.1f s; %s", position, len(jobs), job.name, result.seconds, found)
        else:
            logger.error("[%d/%d] %s", position, len(jobs), result.error)
        if on_result is not None:
            on_result(position, result)
        results.append(result)
    return results


def _run_job(
    segmenter: Segmenter, job: SegmentationJob, options: OutputOptions, largest_component: bool, model: dict[str, Any] | None
) -> JobResult:
    start = time.perf_counter()
    try:
        image, segmentation = segmenter.segment_file(job.input, largest_component, with_scores=options.probabilities)
        outputs = write_outputs(image, segmentation, output_paths(job.input, job.output_dir, options), model)
    except BundleError:
        raise  # the model's fault: no input is to blame, and every next input would fail alike
    except Exception as error:  # reported in one line and counted as a failure; the next input goes on
        logger.debug("%s failed", job.name, exc_info=True)
        return JobResult(job, seconds=time.perf_counter() - start, error=_one_line(job, error))
    volumes = structure_volumes(segmentation.labels, segmentation.label_set)
    return JobResult(job, outputs, volumes, time.perf_counter() - start)


def _one_line(job: SegmentationJob, error: BaseException) -> str:
    """``"<name>: <problem>"``, the input called by the job's name; other files keep their full path."""
    if isinstance(error, PathError) and Path(error.path) == job.input:
        problem = error.problem
    elif isinstance(error, (ValueError, OSError)):
        problem = str(error)
    else:
        problem = f"{type(error).__name__}: {error}"
    return f"{job.name}: {' '.join(problem.split()) or type(error).__name__}"
