"""brainseg_tf.dicom's pure pieces: LPS/RAS geometry of slice stacks, the refusals it names, contrast words."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.dicom.contrast import contrast_warning, named_contrast
from brainseg_tf.dicom.geometry import LPS_TO_RAS, slice_index, slice_normal, stack_problem, stack_slices

AXIAL = np.array([1.0, 0, 0, 0, 1, 0])  # rows run to the patient's left, columns to posterior (LPS)


def _positions(steps: list[float], orientation: np.ndarray = AXIAL, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    normal = slice_normal(orientation)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    return np.asarray(origin) + along[:, None] * normal


def test_an_axial_stack_maps_its_first_pixel_and_axes_to_ras() -> None:
    positions = _positions([2.0] * 4)[::-1]  # given top to bottom: sorted bottom to top
    stack = stack_slices(AXIAL, np.array([0.5, 0.8]), positions)
    assert list(stack.order) == [4, 3, 2, 1, 0]
    expected = np.array([[-0.8, 0, 0, -10.0], [0, -0.5, 0, 20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(stack.affine, expected, atol=1e-12)


def test_lps_to_ras_flips_x_and_y_only_and_is_its_own_inverse() -> None:
    assert np.array_equal(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))
    assert np.array_equal(LPS_TO_RAS @ np.array([1.0, 2.0, 3.0, 1.0]), np.array([-1.0, -2.0, 3.0, 1.0]))


@pytest.mark.parametrize(
    ("steps", "phrase"),
    [
        ([1.0] * 5, None),
        ([3.0, 3.0000005, 2.9999995, 3.0], None),  # text-encoding noise in the positions
        ([1.0, 1.0, 2.0, 1.0], "1 slice(s) missing"),
        ([1.0, 3.0, 1.0, 1.0], "2 slice(s) missing"),
        ([1.0, 1.5, 1.0, 1.0], "uneven slice spacing"),
        ([1.0, 0.0, 1.0, 1.0], "share positions"),
    ],
    ids=["even", "rounding", "one-missing", "two-missing", "uneven", "repeated"],
)
def test_stack_problems_are_named(steps: list[float], phrase: str | None) -> None:
    problem = stack_problem(AXIAL, _positions(steps))
    assert (problem is None) if phrase is None else (phrase in problem), problem


def test_a_tilted_stack_is_refused_and_a_straight_oblique_one_is_not() -> None:
    angle = np.radians(20)
    oblique = np.array([1.0, 0, 0, 0, np.cos(angle), np.sin(angle)])
    assert stack_problem(oblique, _positions([1.5] * 6, oblique)) is None
    tilted = _positions([1.5] * 6) + np.arange(7)[:, None] * np.array([0.0, 0.2, 0.0])  # sheared along y
    assert "off their normal" in stack_problem(AXIAL, tilted)


def test_slice_index_finds_the_slice_of_a_first_pixel_and_nothing_off_the_grid() -> None:
    positions = _positions([2.0] * 4)
    stack = stack_slices(AXIAL, np.array([1.0, 1.0]), positions)
    assert [slice_index(stack.affine, p) for p in positions] == [0, 1, 2, 3, 4]
    assert slice_index(stack.affine, positions[2] + np.array([0.5, 0, 0])) is None  # shifted in-plane
    assert slice_index(stack.affine, positions[2] + np.array([0, 0, 1.0])) is None  # between slices


@pytest.mark.parametrize(
    ("description", "contrast"),
    [
        ("T1 MPRAGE SAG", None),
        ("sag_mprage_1mm", None),
        ("AX T1 FLAIR", None),  # a T1-weighted FLAIR is T1
        ("Ax T2 TSE", "T2"),
        ("t2_spc_sag", "T2"),
        ("AX_FLAIR", "FLAIR"),
        ("ep2d_diff_b1000", "DWI"),
        ("DTI 30 dir", "DWI"),
        ("ADC map", "ADC"),
        ("SWI_Images", "T2*"),
        ("PD TSE", "proton density"),
        ("", None),
        ("MPRAGE2", None),
        ("ST2A", None),
    ],
)
def test_a_description_naming_another_contrast_gives_a_named_warning(description: str, contrast: str | None) -> None:
    assert named_contrast(description) == contrast
    warning = contrast_warning(description)
    assert (warning is None) if contrast is None else (contrast in warning and description not in warning)
