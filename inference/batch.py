"""Segment many files with one segmenter: each input independently, failures collected, not raised."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainseg_tf.errors import BundleError, ImageError, PathError, SeriesError, VolumeError
from inference.outputs import OutputOptions, StructureVolume, output_paths, structure_volumes, write_outputs
from inference.qc import QcReason, QcVerdict
from inference.segmenter import Segmenter

if TYPE_CHECKING:
    from brainseg_tf.dicom import DicomSeries

logger = logging.getLogger(__name__)

DICOM_STAND_IN_SUFFIX = ".nii.gz"
"""A DICOM series' outputs are named as a ``<series stem>.nii.gz`` input's would be (``--format same`` gives NIfTI)."""


@dataclass(frozen=True)
class SegmentationJob:
    """One input volume and where its outputs go.

    Attributes:
        input: the image file.
        output_dir: the folder its outputs are written to.
        name: how logs and reports call it (e.g. its path relative to the input folder; a DICOM
            series' key, never its folder: PACS exports name folders after patients).
        series: the DICOM series to read (``input`` is then its folder), or None for a volume file.
    """

    input: Path
    output_dir: Path
    name: str
    series: DicomSeries | None = None

    def output_paths(self, options: OutputOptions) -> dict[str, Path]:
        """`inference.outputs.output_paths` of this job (a series' outputs are named after its stem)."""
        if self.series is None:
            return output_paths(self.input, self.output_dir, options)
        return output_paths(Path(self.series.stem + DICOM_STAND_IN_SUFFIX), self.output_dir, options)

    def seg_path(self) -> Path | None:
        """Where this job's DICOM SEG goes (``<series stem>_seg.dcm``); None for a volume file."""
        return None if self.series is None else self.output_dir / f"{self.series.stem}_seg.dcm"


@dataclass(frozen=True)
class JobResult:
    """What became of one job: its outputs and volumes, or the one-line error."""

    job: SegmentationJob
    outputs: list[Path] = field(default_factory=list)
    volumes: list[StructureVolume] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    qc: QcVerdict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def dicom_jobs(root: Path, output_root: Path) -> list[SegmentationJob]:
    """One job per DICOM series found under ``root``; its outputs go to its folder's mirror under ``output_root``.

    Series are found by file content (`brainseg_tf.dicom.find_series`: DICM preamble, any name but a
    NIfTI/MGZ one, hidden files skipped), grouped by SeriesInstanceUID, and named by their key.
    """
    from brainseg_tf.dicom import find_series

    return [
        SegmentationJob(series.folder, output_root / series.folder.relative_to(root), series.key, series)
        for series in find_series(root)
    ]


def planned_outputs(jobs: Sequence[SegmentationJob], options: OutputOptions) -> dict[Path, SegmentationJob]:
    """Every output path of every job, checked for collisions before anything runs (jobs whose input
    has no volume suffix are left out: they will fail on their own).

    Raises:
        ValueError: two jobs would write the same file (e.g. ``a.nii`` and ``a.nii.gz`` in one folder).
    """
    owners: dict[Path, SegmentationJob] = {}
    for job in jobs:
        try:
            paths = job.output_paths(options)
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
    dicom_seg: bool = False,
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
        dicom_seg: also write a DICOM SEG of each DICOM series' labels (`brainseg_tf.dicom.write_seg`).

    Returns:
        One result per job, in order.

    Raises:
        BundleError: the model failed, not an input.
    """
    results = []
    for position, job in enumerate(jobs, start=1):
        result = _run_job(segmenter, job, options, largest_component, model, dicom_seg)
        if result.ok:
            found = ", ".join(f"{v.name} {v.volume_mm3 / 1000:.1f} mL" for v in result.volumes)
            logger.info("[%d/%d] %s: %.1f s; %s", position, len(jobs), job.name, result.seconds, found)
            if result.qc is not None:
                level = logging.INFO if result.qc.status == "pass" else logging.WARNING
                logger.log(level, "[%d/%d] %s: %s", position, len(jobs), job.name, result.qc.summary())
        else:
            logger.error("[%d/%d] %s", position, len(jobs), result.error)
        if on_result is not None:
            on_result(position, result)
        results.append(result)
    return results


def _run_job(
    segmenter: Segmenter, job: SegmentationJob, options: OutputOptions, largest_component: bool, model: dict[str, Any] | None,
    dicom_seg: bool = False,
) -> JobResult:
    start = time.perf_counter()
    try:
        if job.series is None:
            image, segmentation = segmenter.segment_file(job.input, largest_component, with_scores=options.probabilities)
            outputs = write_outputs(image, segmentation, job.output_paths(options), model)
        else:
            segmentation, outputs = _run_series(segmenter, job, job.series, options, largest_component, model, dicom_seg)
    except BundleError:
        raise  # the model's fault: no input is to blame, and every next input would fail alike
    except Exception as error:  # reported in one line and counted as a failure; the next input goes on
        logger.debug("%s failed", job.name, exc_info=True)
        return JobResult(job, seconds=time.perf_counter() - start, error=_one_line(job, error))
    volumes = structure_volumes(segmentation.labels, segmentation.label_set)
    return JobResult(job, outputs, volumes, time.perf_counter() - start, qc=segmentation.qc)


def _run_series(
    segmenter: Segmenter, job: SegmentationJob, series: DicomSeries, options: OutputOptions, largest_component: bool,
    model: dict[str, Any] | None, dicom_seg: bool,
) -> tuple[Any, list[Path]]:
    """Read a DICOM series, segment it, write its outputs (and its SEG: all of them or none)."""
    from brainseg_tf.dicom import CONTRAST_WARNING_CODE, load_series, write_seg

    loaded = load_series(series)
    if series.contrast_warning:
        logger.warning("%s: %s", job.name, series.contrast_warning)
    try:
        segmentation = segmenter.segment(loaded.image, largest_component, with_scores=options.probabilities)
    except ImageError as error:
        raise SeriesError(series.key, str(error)) from None
    if series.contrast_warning and segmentation.qc is not None and not segmenter.settings.qc.accept_named_contrast:
        flagged = segmentation.qc.with_reason(QcReason(CONTRAST_WARNING_CODE, series.contrast_warning))
        segmentation = dataclasses.replace(segmentation, qc=flagged)
    outputs = write_outputs(loaded.image, segmentation, job.output_paths(options), model)
    seg_path = job.seg_path()
    if dicom_seg and seg_path is not None:
        try:
            outputs.append(write_seg(segmentation.labels, segmentation.label_set, loaded, seg_path, (model or {}).get("bundle", "brainseg-tf")))
        except BaseException:
            for path in outputs:
                path.unlink(missing_ok=True)
            raise
    return segmentation, outputs


def _one_line(job: SegmentationJob, error: BaseException) -> str:
    """``"<name>: <problem>"``, the input called by the job's name; other files keep their full path."""
    if isinstance(error, PathError) and (Path(error.path) == job.input or error.path == job.name):
        problem = error.problem
    elif isinstance(error, (ValueError, OSError)):
        problem = str(error)
    else:
        problem = f"{type(error).__name__}: {error}"
    return f"{job.name}: {' '.join(problem.split()) or type(error).__name__}"
