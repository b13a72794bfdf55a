"""Input QC: does this segmentation deserve trust? A per-volume verdict, a score and named reasons.

The measures are cheap statistics of the input image, read through the brain extraction and the tissue
labels (all on the input's grid):

- ``brain_volume_ml``: the brain mask's volume (the labelled voxels' without an extractor). Below
  ``QcConfig.min_brain_ml`` there is no brain to segment: the volume is refused. Outside
  ``plausible_brain_ml`` (a newborn's brain to a large adult's, the extractor's mask included) it is flagged.
- ``direction_agreement``: the lowest Dice between the extractor's slice directions. Low when they
  disagree about where the brain is: a failed extraction.
- ``structure``: the correlation of neighbouring voxels inside the brain. An MR image is smooth at the
  scale of a voxel even at SNR 5; noise is not.
- ``brain_over_shell``: how much brighter the brain is than the shell just outside it (extra-cerebral
  CSF, dura, inner table: dark on a T1), in units of the brain's own intensity spread. Negative on a
  T2-like image, where that shell is bright.
- ``white_over_gray``: how much brighter the voxels labelled white matter are than those labelled gray
  matter, same units. A T1 has white matter brighter.

Each check turns its measure into a value in [0, 1]: 0 at or beyond its limit (the check flags), 1 at
its ideal, linear between. The score is the lowest value; a volume is flagged (``warn``) when any check
flags, refused (``fail``) when the brain extractor finds no brain. Limits live in `brainseg_tf.config.QcConfig` and were
calibrated on synthetic failures (docs/real-heads.md, section 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import ndimage

from brainseg_tf.config import QcConfig
from brainseg_tf.io import Volume

if TYPE_CHECKING:
    from inference.extraction import BrainExtraction

Status = Literal["pass", "warn", "fail"]
MIN_VOXELS = 64
"""Fewer voxels than this in a region: its statistics are not computed (the check does not run)."""


@dataclass(frozen=True)
class QcReason:
    """One check that flagged: a stable code, a sentence for people, and whether it refuses the volume."""

    code: str
    message: str
    refuse: bool = False


@dataclass(frozen=True)
class QcVerdict:
    """The QC result of one volume.

    Attributes:
        score: the lowest check value, in [0, 1]; 0 when a check flags.
        reasons: the checks that flagged, in check order.
        measures: every measure computed, by name (absent when its region was too small).
    """

    score: float
    reasons: tuple[QcReason, ...]
    measures: dict[str, float]

    @property
    def status(self) -> Status:
        """``fail`` when a reason refuses the volume, ``warn`` when any check flags, ``pass`` otherwise."""
        if any(reason.refuse for reason in self.reasons):
            return "fail"
        return "warn" if self.reasons else "pass"

    def with_reason(self, reason: QcReason) -> QcVerdict:
        """The same verdict flagged for one more reason found outside the image (e.g. a DICOM series description)."""
        return QcVerdict(0.0, (*self.reasons, reason), dict(self.measures))

    def summary(self) -> str:
        """One line for logs and picture titles: ``QC pass (score 0.82)`` or ``QC warn: <reasons>``."""
        if not self.reasons:
            return f"QC {self.status} (score {self.score:.2f})"
        return f"QC {self.status}: " + "; ".join(reason.message for reason in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as the volumes JSON records it."""
        return {
            "status": self.status,
            "score": round(self.score, 4),
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "measures": {name: round(value, 4) for name, value in self.measures.items()},
        }


def qc_measures(image: Volume, brain: np.ndarray, labels: np.ndarray, voxel_ml: float,
                direction_agreement: float | None, over_shell: float | None) -> dict[str, float]:
    """The measures of the module docstring; each needs its region to hold at least `MIN_VOXELS` voxels.

    Args:
        image: the input image.
        brain: boolean brain mask on the image's grid.
        labels: tissue class indices on the image's grid (1 CSF, 2 gray matter, 3 white matter).
        voxel_ml: one voxel's volume, mL.
        direction_agreement: from the brain extraction; None without one.
        over_shell: `brain_over_shell` of the brain extraction's own grid; None without one.
    """
    values = np.asarray(image.array, dtype=np.float32)
    measures = {"brain_volume_ml": float(np.count_nonzero(brain)) * voxel_ml}
    if direction_agreement is not None:
        measures["direction_agreement"] = float(direction_agreement)
    if np.count_nonzero(brain) < MIN_VOXELS:
        return measures
    inside = values[brain]
    low, high = np.percentile(inside, [5.0, 95.0])
    spread = float(high - low) or 1.0
    measures["structure"] = neighbour_correlation(values, brain)
    if over_shell is not None:
        measures["brain_over_shell"] = over_shell
    white, gray = labels == 3, labels == 2
    if np.count_nonzero(white) >= MIN_VOXELS and np.count_nonzero(gray) >= MIN_VOXELS:
        measures["white_over_gray"] = float(np.median(values[white]) - np.median(values[gray])) / spread
    return measures


def qc_verdict(measures: dict[str, float], limits: QcConfig, extracted: bool = True) -> QcVerdict:
    """Turn measures into checks, reasons and a score (module docstring).

    Args:
        measures: from `qc_measures`.
        limits: the checks' limits.
        extracted: the brain volume is a brain extractor's finding, so too little of it refuses the
            volume; without an extractor it is the labels' volume, checked against the plausible band only.
    """
    values: list[float] = []
    reasons: list[QcReason] = []
    volume = measures["brain_volume_ml"]
    if extracted and volume < limits.min_brain_ml:
        reasons.append(QcReason("no_brain", f"no brain found ({volume:.0f} mL of brain)", refuse=True))
        return QcVerdict(0.0, tuple(reasons), dict(measures))
    low, high = limits.plausible_brain_ml
    values.append(min(_ramp(volume, low, low * 1.25), _ramp(-volume, -high, -high / 1.25)))  # 1 well inside the band
    if values[-1] == 0.0:
        reasons.append(QcReason("brain_volume", f"implausible brain volume {volume:.0f} mL (expected {low:.0f}-{high:.0f} mL)"))
    checks = (
        ("direction_agreement", limits.min_direction_agreement, 0.9, "extraction", "brain extraction unreliable (slice directions disagree, Dice {:.2f})"),
        ("structure", limits.min_structure, 0.9, "noise", "noise: no image structure inside the brain (neighbour correlation {:.2f})"),
        ("brain_over_shell", limits.min_brain_over_shell, 0.6, "contrast", "the brain is not brighter than its surroundings ({:.2f}): not T1-like, or the extraction cut through the brain"),
        ("white_over_gray", limits.min_white_over_gray, 0.4, "contrast", "not T1-like: white matter not brighter than gray matter ({:.2f})"),
    )
    for name, limit, ideal, code, message in checks:
        if name not in measures:
            continue
        values.append(_ramp(measures[name], limit, ideal))
        if values[-1] == 0.0 and not any(reason.code == code for reason in reasons):
            reasons.append(QcReason(code, message.format(measures[name])))
    return QcVerdict(float(min(values)), tuple(reasons), dict(measures))


def neighbour_correlation(values: np.ndarray, region: np.ndarray) -> float:
    """Mean over the three axes of the correlation between each voxel of ``region`` and its next neighbour."""
    correlations = []
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        pair = region[tuple(first)] & region[tuple(second)]
        if np.count_nonzero(pair) < MIN_VOXELS:
            continue
        a, b = values[tuple(first)][pair], values[tuple(second)][pair]
        if a.std() == 0 or b.std() == 0:
            correlations.append(1.0)
            continue
        correlations.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(correlations)) if correlations else 1.0


def brain_over_shell(values: np.ndarray, brain: np.ndarray, voxel_mm: float, shell_mm: tuple[float, float]) -> float | None:
    """(median brain - median shell) / the brain's 5-95 % spread, the shell ``shell_mm`` outside the brain;
    None when the brain or the shell holds fewer than `MIN_VOXELS` voxels."""
    shell = outer_shell(brain, (voxel_mm,) * 3, *shell_mm)  # type: ignore[arg-type]
    if np.count_nonzero(brain) < MIN_VOXELS or np.count_nonzero(shell) < MIN_VOXELS:
        return None
    inside = values[brain]
    low, high = np.percentile(inside, [5.0, 95.0])
    return float(np.median(inside) - np.median(values[shell])) / (float(high - low) or 1.0)


def outer_shell(mask: np.ndarray, voxel_sizes: tuple[float, float, float], inner_mm: float, outer_mm: float) -> np.ndarray:
    """Voxels between ``inner_mm`` (exclusive) and ``outer_mm`` (inclusive) outside a mask, by Euclidean distance in mm."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    reach = [int(np.ceil(outer_mm / s)) + 1 for s in voxel_sizes]
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    window = tuple(slice(max(s.start - r, 0), min(s.stop + r, n)) for s, r, n in zip(box, reach, mask.shape))
    distance = ndimage.distance_transform_edt(~mask[window], sampling=voxel_sizes)
    shell = np.zeros_like(mask, dtype=bool)
    shell[window] = (distance > inner_mm) & (distance <= outer_mm)
    return shell


def _ramp(value: float, limit: float, ideal: float) -> float:
    """0 at or beyond ``limit``, 1 at or beyond ``ideal``, linear between."""
    if value <= limit:
        return 0.0
    return float(min(1.0, (value - limit) / (ideal - limit)))


def assess(image: Volume, labels: Volume, brain: BrainExtraction | None, limits: QcConfig) -> QcVerdict:
    """The QC verdict of one segmented image (all volumes on the image's grid).

    With a brain extraction, the brain is its mask, and the shell lies ``limits.shell_mm`` outside the
    extractor's mask on the extractor's own (coarse, cheap) grid; without one, the brain is the labelled
    voxels and the shell check does not run; for an input that arrived skull-stripped, neither the shell
    nor the direction check runs (`BrainExtraction.already_stripped`).
    """
    voxel_ml = float(abs(np.linalg.det(np.asarray(image.affine)[:3, :3]))) / 1000.0
    if brain is None:
        mask, over_shell, agreement = np.asarray(labels.array) > 0, None, None
    elif brain.already_stripped:  # no network ran, and nothing lies outside the brain to compare it with
        mask, over_shell, agreement = brain.mask.array > 0, None, None
    else:
        mask = brain.mask.array > 0
        over_shell = brain_over_shell(brain.grid_image, brain.grid_mask, brain.grid_voxel_mm, limits.shell_mm)
        agreement = brain.direction_agreement
    measures = qc_measures(image, mask, np.asarray(labels.array), voxel_ml, agreement, over_shell)
    if brain is not None and brain.already_stripped:
        measures["already_stripped"] = 1.0  # recorded, so the volumes JSON says how the brain was found
    return qc_verdict(measures, limits, extracted=brain is not None)
