"""Input QC: each check flags at exactly its limit, measures tell noise and contrast apart, the verdict's forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from brainseg_tf.config import QcConfig
from brainseg_tf.io import Image, LabelMap
from inference.qc import QcVerdict, assess, brain_over_shell, neighbour_correlation, outer_shell, qc_measures, qc_verdict

LIMITS = QcConfig()
GOOD = {"brain_volume_ml": 1200.0, "direction_agreement": 0.95, "structure": 0.9, "brain_over_shell": 0.6, "white_over_gray": 0.4}


def _verdict(**changes: float) -> QcVerdict:
    return qc_verdict({**GOOD, **changes}, LIMITS)


def test_a_good_volume_passes_with_score_one() -> None:
    verdict = _verdict()
    assert (verdict.status, verdict.score, verdict.reasons) == ("pass", 1.0, ())
    assert verdict.summary() == "QC pass (score 1.00)"


@pytest.mark.parametrize(
    ("name", "limit", "code"),
    [
        ("direction_agreement", LIMITS.min_direction_agreement, "extraction"),
        ("structure", LIMITS.min_structure, "noise"),
        ("brain_over_shell", LIMITS.min_brain_over_shell, "contrast"),
        ("white_over_gray", LIMITS.min_white_over_gray, "contrast"),
    ],
)
def test_each_check_flags_at_exactly_its_limit_and_not_just_above(name: str, limit: float, code: str) -> None:
    at = _verdict(**{name: limit})
    assert (at.status, at.score, [r.code for r in at.reasons]) == ("warn", 0.0, [code])
    above = _verdict(**{name: float(np.nextafter(limit, np.inf))})
    assert above.status == "pass" and 0.0 < above.score < 1e-6


@pytest.mark.parametrize(
    ("volume", "status", "codes"),
    [
        (LIMITS.min_brain_ml, "warn", ["brain_volume"]),  # at the refusal limit: not refused, but implausible
        (float(np.nextafter(LIMITS.min_brain_ml, 0)), "fail", ["no_brain"]),
        (LIMITS.plausible_brain_ml[0], "warn", ["brain_volume"]),
        (LIMITS.plausible_brain_ml[0] * 1.25, "pass", []),
        (LIMITS.plausible_brain_ml[1], "warn", ["brain_volume"]),
        (LIMITS.plausible_brain_ml[1] / 1.25, "pass", []),
    ],
)
def test_brain_volume_edges(volume: float, status: str, codes: list[str]) -> None:
    verdict = _verdict(brain_volume_ml=volume)
    assert (verdict.status, [r.code for r in verdict.reasons]) == (status, codes)


def test_too_little_brain_refuses_only_when_an_extractor_found_it() -> None:
    assert qc_verdict({**GOOD, "brain_volume_ml": 5.0}, LIMITS, extracted=True).status == "fail"
    assert qc_verdict({**GOOD, "brain_volume_ml": 5.0}, LIMITS, extracted=False).status == "warn"


def test_two_contrast_checks_give_one_reason_and_missing_measures_are_skipped() -> None:
    verdict = _verdict(brain_over_shell=-0.5, white_over_gray=-0.3)
    assert [r.code for r in verdict.reasons] == ["contrast"]
    assert qc_verdict({"brain_volume_ml": 1200.0}, LIMITS).status == "pass"


def test_the_verdict_as_json_and_in_one_line() -> None:
    verdict = _verdict(structure=0.1)
    document = json.loads(json.dumps(verdict.to_dict()))
    assert document["status"] == "warn" and document["score"] == 0.0
    assert document["reasons"] == [{"code": "noise", "message": "noise: no image structure inside the brain (neighbour correlation 0.10)"}]
    assert document["measures"]["structure"] == 0.1
    assert verdict.summary() == "QC warn: noise: no image structure inside the brain (neighbour correlation 0.10)"


def test_neighbour_correlation_tells_smooth_images_from_noise() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(24, 24, 24)).astype(np.float32)
    smooth = ndimage.gaussian_filter(noise, 2.0)
    region = np.ones(noise.shape, bool)
    assert abs(neighbour_correlation(noise, region)) < 0.1
    assert neighbour_correlation(smooth, region) > 0.8
    assert neighbour_correlation(np.full(noise.shape, 3.0, np.float32), region) == 1.0  # constant: nothing to doubt


def test_outer_shell_lies_between_its_distances_in_mm() -> None:
    mask = np.zeros((21, 21, 21), bool)
    mask[10, 10, 10] = True
    shell = outer_shell(mask, (1.0, 1.0, 2.0), 1.0, 4.0)
    assert not shell[10, 10, 10] and not shell[10, 11, 10]  # the mask, and 1 mm away (not beyond inner)
    assert shell[10, 12, 10] and shell[10, 14, 10] and not shell[10, 15, 10]  # 2 and 4 mm in, 5 mm out
    assert shell[10, 10, 12] and not shell[10, 10, 13]  # along the 2 mm axis: 4 mm in, 6 mm out


def _phantom(contrast: str) -> tuple[Image, LabelMap, np.ndarray]:
    """A 2 mm ball brain (gray rim, white core) in a dark shell inside a bright scalp; T1-like or inverted."""
    grid = np.indices((40, 40, 40)).astype(np.float32)
    radius = np.sqrt(((grid - 19.5) ** 2).sum(axis=0))
    labels = np.select([radius <= 8, radius <= 12], [3, 2], 0).astype(np.uint8)
    image = np.select([radius <= 8, radius <= 12, radius <= 15, radius <= 18], [1.0, 0.6, 0.1, 0.9], 0.0).astype(np.float32)
    if contrast == "inverted":
        image = np.where(radius <= 18, 1.1 - image, 0.0).astype(np.float32)
    image += np.random.default_rng(1).normal(0, 0.02, image.shape).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return Image(image, affine), LabelMap(labels, affine), labels > 0


def test_measures_see_a_t1_and_its_inversion() -> None:
    for contrast, sign in (("t1", 1), ("inverted", -1)):
        image, labels, brain = _phantom(contrast)
        over_shell = brain_over_shell(image.array, brain, 2.0, (1.0, 5.0))
        measures = qc_measures(image, brain, labels.array, 0.008, 0.9, over_shell)
        assert measures["brain_volume_ml"] == pytest.approx(brain.sum() * 0.008)
        assert np.sign(measures["brain_over_shell"]) == sign and np.sign(measures["white_over_gray"]) == sign
        assert measures["structure"] > 0.5
    assert assess(*_phantom("t1")[:2], None, LIMITS).reasons[0].code == "brain_volume"  # a 7 mL ball is no brain


def test_brain_over_shell_needs_both_regions() -> None:
    brain = np.zeros((12, 12, 12), bool)
    assert brain_over_shell(np.ones(brain.shape, np.float32), brain, 2.0, (1.0, 5.0)) is None  # no brain
    brain[2:10, 2:10, 2:10] = True
    values = np.where(brain, 1.0, 0.2).astype(np.float32)
    assert brain_over_shell(values, brain, 2.0, (1.0, 5.0)) > 0  # brighter brain, shell inside the grid
    brain[:] = True
    assert brain_over_shell(values, brain, 2.0, (1.0, 5.0)) is None  # no room for a shell
