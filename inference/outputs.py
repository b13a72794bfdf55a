"""What one segmented volume leaves behind: label map, volumes table (CSV + JSON, and for FreeSurfer label sets an
``aseg.stats``), QC picture, probabilities.

All files of one input are written under temporary hidden names first and renamed into place only
when every one of them is complete: a failure (or a kill) never leaves a partial set under final
names. Headers are built fresh (`brainseg_tf.io.save_volume`): nothing of the input's header
(``descrip``, ``db_name``, extensions) reaches an output.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_tf.io import SUPPORTED_SUFFIXES, Volume, save_volume, volume_suffix
from brainseg_tf.labels import LabelSet
from brainseg_tf.visualize import save_volume_overlays
from inference.qc import QcVerdict
from inference.segmenter import Segmentation

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("same", *(suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES))
"""``same`` keeps the input's format; otherwise ``nii.gz``, ``nii`` or ``mgz``."""

VOLUMES_CSV_COLUMNS = ("class_index", "label", "name", "voxels", "volume_mm3")
FREESURFER_LABEL_SETS = frozenset({"aseg", "structures"})
"""Label sets whose stored values are FreeSurfer's aseg IDs: their volumes also go to a file in the layout of
FreeSurfer's ``aseg.stats`` (`aseg_stats`), which FreeSurfer's own tools (``asegstats2table``) read."""
ASEG_STATS_COLUMNS = ("Index", "SegId", "NVoxels", "Volume_mm3", "StructName", "normMean", "normStdDev", "normMin", "normMax", "normRange")
VENTRICLES_AND_CSF = ("Lateral-Ventricle", "Inf-Lat-Vent", "3rd-Ventricle", "4th-Ventricle", "CSF", "5th-Ventricle", "choroid-plexus")
"""Name endings of the classes FreeSurfer leaves out of ``BrainSegNotVent``."""


@dataclass(frozen=True)
class OutputOptions:
    """Which outputs to write and in which format.

    Attributes:
        format: label map (and probabilities) format: one of `OUTPUT_FORMATS`.
        qc: write the QC picture.
        probabilities: write the per-class probability maps (4D, float32).
        aseg_stats: also write the volumes in the layout of FreeSurfer's ``aseg.stats`` (for label sets of
            FreeSurfer IDs: `writes_aseg_stats`).
    """

    format: str = "same"
    qc: bool = True
    probabilities: bool = False
    aseg_stats: bool = False

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"Expected format in {OUTPUT_FORMATS}. Received: format={self.format!r}")


@dataclass(frozen=True)
class StructureVolume:
    """The size of one structure in a label map."""

    class_index: int
    label: int
    name: str
    voxels: int
    volume_mm3: float


def output_paths(input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str], options: OutputOptions) -> dict[str, Path]:
    """Final paths of an input's outputs in ``output_dir``: ``<stem>_labels<suffix>``, ``<stem>_volumes.csv``,
    ``<stem>_volumes.json``, and when asked ``<stem>_qc.png`` and ``<stem>_probabilities<suffix>``.

    Raises:
        VolumeError: the input's name has no supported suffix.
    """
    name = Path(input_path).name
    input_suffix = volume_suffix(input_path)
    stem = name[: -len(input_suffix)]
    suffix = input_suffix if options.format == "same" else f".{options.format}"
    folder = Path(output_dir)
    paths = {
        "labels": folder / f"{stem}_labels{suffix}",
        "volumes_csv": folder / f"{stem}_volumes.csv",
        "volumes_json": folder / f"{stem}_volumes.json",
    }
    if options.qc:
        paths["qc"] = folder / f"{stem}_qc.png"
    if options.probabilities:
        paths["probabilities"] = folder / f"{stem}_probabilities{suffix}"
    if options.aseg_stats:
        paths["aseg_stats"] = folder / f"{stem}_aseg.stats"
    return paths


def writes_aseg_stats(label_set: LabelSet) -> bool:
    """Whether a label set's stored values are FreeSurfer's aseg IDs (`FREESURFER_LABEL_SETS`)."""
    return label_set.name in FREESURFER_LABEL_SETS


def aseg_stats(volumes: list[StructureVolume], image: Volume, labels: Volume, label_set: LabelSet, program: str = "brainseg-tf") -> str:
    """The volumes in the layout of FreeSurfer's ``aseg.stats`` (``mri_segstats``): ``#`` header lines with the
    ``BrainSeg`` and ``BrainSegNotVent`` measures, ``# ColHeaders``, then one row per structure (every class of the
    label set, empty ones with 0 voxels). The intensity columns are the input image's own values inside each structure
    (FreeSurfer takes them from its intensity-normalised ``norm.mgz``; here they are not normalised). No file name or
    header field of the input is written (they may identify the patient)."""
    image_array = np.asarray(image.array, dtype=np.float64)
    classes = np.asarray(labels.array)
    voxel_mm3 = float(abs(np.linalg.det(labels.affine[:3, :3])))
    brain = sum(v.volume_mm3 for v in volumes)
    not_vent = sum(v.volume_mm3 for v in volumes if not v.name.endswith(VENTRICLES_AND_CSF))
    lines = [
        "# Title Segmentation Statistics",
        "#",
        f"# generating_program {program}",
        f"# label_set {label_set.name}",
        "# anatomy_type volume",
        "#",
        "# SegVolFile labels (this file's label map)",
        "# InVolFile input (intensities of the input image, not normalised)",
        f"# Measure BrainSeg, BrainSegVol, Brain Segmentation Volume, {brain:.6f}, mm^3",
        f"# Measure BrainSegNotVent, BrainSegVolNotVent, Brain Segmentation Volume Without Ventricles, {not_vent:.6f}, mm^3",
        "# ExcludeSegId 0",
        f"# VoxelVolume_mm3 {voxel_mm3:g}",
        f"# NRows {len(volumes)}",
        f"# NTableCols {len(ASEG_STATS_COLUMNS)}",
        "# ColHeaders  " + " ".join(ASEG_STATS_COLUMNS),
    ]
    for row, v in enumerate(volumes, start=1):
        inside = image_array[classes == v.class_index]
        low, high = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 0.0)
        mean, std = (float(inside.mean()), float(inside.std())) if inside.size else (0.0, 0.0)
        lines.append(f"{row:3d} {v.label:4d} {v.voxels:9d} {v.volume_mm3:12.1f}  {v.name:<32s} "
                     f"{mean:10.4f} {std:10.4f} {low:10.4f} {high:10.4f} {high - low:10.4f}")
    return "\n".join(lines) + "\n"


def structure_volumes(labels: Volume, label_set: LabelSet) -> list[StructureVolume]:
    """Voxel count and volume (mm^3, voxel count times the voxel volume from the affine) of every foreground class."""
    voxel_mm3 = float(abs(np.linalg.det(labels.affine[:3, :3])))
    counts = np.bincount(np.asarray(labels.array, dtype=np.int64).ravel(), minlength=label_set.num_classes)
    return [
        StructureVolume(index, label_set.values[index], label_set.names[index], int(counts[index]), float(counts[index]) * voxel_mm3)
        for index in label_set.foreground_classes
    ]


def volumes_csv(volumes: list[StructureVolume]) -> str:
    """The volumes table as CSV text, one row per structure."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VOLUMES_CSV_COLUMNS)
    for v in volumes:
        writer.writerow([v.class_index, v.label, v.name, v.voxels, f"{v.volume_mm3:.3f}"])
    return buffer.getvalue()


def volumes_json(
    volumes: list[StructureVolume], labels: Volume, label_set: LabelSet, model: dict[str, Any], qc: QcVerdict | None = None
) -> str:
    """The volumes table as JSON, with the voxel volume, the label set, the model that made it and the QC verdict."""
    document = {
        "label_set": label_set.name,
        "model": model,
        "voxel_volume_mm3": float(abs(np.linalg.det(labels.affine[:3, :3]))),
        "shape": list(labels.shape),
        "structures": [vars(v) for v in volumes],
        "qc": None if qc is None else qc.to_dict(),
    }
    return json.dumps(document, indent=2) + "\n"


def write_outputs(
    image: Volume, segmentation: Segmentation, paths: dict[str, Path], model: dict[str, Any] | None = None
) -> list[Path]:
    """Write every output named in ``paths`` (from `output_paths`) as one all-or-nothing set.

    Args:
        image: the input image (pictured under the labels in the QC PNG).
        segmentation: its segmentation, on the same grid.
        paths: final paths by output name.
        model: what to record about the model in the JSON (e.g. bundle name and family).

    Returns:
        The final paths written.

    Raises:
        VolumeError / OSError: a write failed; no output of this set is left under its final name.
        ValueError: probability maps asked for a segmentation without scores (nothing is written).
    """
    if "probabilities" in paths and segmentation.scores is None:
        raise ValueError("Expected a segmentation with scores for the probability maps (segment with with_scores=True). Received: none")
    volumes = structure_volumes(segmentation.labels, segmentation.label_set)
    writers: dict[str, Callable[[Path], Any]] = {
        "labels": lambda p: save_volume(segmentation.label_values(), p, "label"),
        "volumes_csv": lambda p: p.write_text(volumes_csv(volumes), encoding="utf-8"),
        "volumes_json": lambda p: p.write_text(
            volumes_json(volumes, segmentation.labels, segmentation.label_set, model or {}, segmentation.qc), encoding="utf-8"
        ),
        "qc": lambda p: save_volume_overlays(image, segmentation.labels, segmentation.label_set, p, title=qc_title(segmentation)),
        "probabilities": lambda p: save_volume(segmentation.scores, p, "image"),  # type: ignore[arg-type]  (checked above)
        "aseg_stats": lambda p: p.write_text(aseg_stats(volumes, image, segmentation.labels, segmentation.label_set), encoding="utf-8"),
    }
    unknown = set(paths) - set(writers)
    if unknown:
        raise ValueError(f"Expected output names among {sorted(writers)}. Received: {sorted(unknown)}")
    staged: list[tuple[Path, Path]] = []
    committed: list[Path] = []
    try:
        for name, final in paths.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = _staging_path(final)
            staged.append((temporary, final))
            writers[name](temporary)
        for temporary, final in staged:
            os.replace(temporary, final)
            committed.append(final)
    except BaseException:
        for final in committed:
            final.unlink(missing_ok=True)
        raise
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
    logger.debug("wrote %d outputs", len(committed))
    return committed


def qc_title(segmentation: Segmentation) -> str:
    """The QC picture's title: the verdict's one line (no file name: it may carry patient identifiers)."""
    return "" if segmentation.qc is None else segmentation.qc.summary()


def _staging_path(final: Path) -> Path:
    """A hidden name next to ``final`` that keeps its suffix (the writers pick the format from it)."""
    name = final.name
    suffix = next((s for s in (*SUPPORTED_SUFFIXES, ".csv", ".json", ".png", ".stats") if name.endswith(s)), "")
    return final.with_name(f".{name[: len(name) - len(suffix)]}.staged-{os.getpid()}{suffix}")
