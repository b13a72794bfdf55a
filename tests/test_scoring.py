"""Scores against a reference on tiny arrays with known answers: Dice, surfaces, HD95 (anisotropic voxels), volumes."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.scoring import class_surface, class_volume, dice_scores, hausdorff95, volume_difference


def _points(shape: tuple[int, int, int], *voxels: tuple[int, int, int], value: int = 1) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for voxel in voxels:
        labels[voxel] = value
    return labels


def test_dice_counts_overlap_per_class_and_absent_classes_as_perfect() -> None:
    predicted = np.array([[1, 1, 2], [2, 0, 0]])
    target = np.array([[1, 2, 2], [2, 2, 0]])
    scores = dice_scores(predicted, target, [1, 2, 3])
    assert scores[1] == pytest.approx(2 * 1 / (2 + 1))
    assert scores[2] == pytest.approx(2 * 2 / (2 + 4))
    assert scores[3] == 1.0  # in neither map


def test_surface_of_a_cube_is_its_shell_and_the_array_border_counts() -> None:
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert class_surface(cube).sum() == 26 and not class_surface(cube)[2, 2, 2]
    full = np.ones((3, 3, 3), bool)  # touches the border everywhere: only the centre is inside
    assert class_surface(full).sum() == 26


@pytest.mark.parametrize(
    ("offset", "voxel_size", "expected"),
    [
        ((0, 0, 2), (0.5, 1.0, 3.0), 6.0),  # 2 voxels along the 3 mm axis
        ((2, 0, 0), (0.5, 1.0, 3.0), 1.0),  # 2 voxels along the 0.5 mm axis
        ((1, 1, 0), (3.0, 4.0, 1.0), 5.0),  # diagonal in the anisotropic plane
        ((0, 0, 0), (0.5, 1.0, 3.0), 0.0),
    ],
)
def test_hausdorff95_measures_in_millimetres_with_anisotropic_voxels(offset: tuple, voxel_size: tuple, expected: float) -> None:
    target = _points((8, 8, 8), (3, 3, 3))
    predicted = _points((8, 8, 8), tuple(3 + o for o in offset))
    assert hausdorff95(predicted, target, 1, voxel_size) == pytest.approx(expected)


def test_hausdorff95_is_the_larger_directed_95th_percentile() -> None:
    target = _points((4, 4, 24), (1, 1, 1))
    predicted = _points((4, 4, 24), (1, 1, 1), (1, 1, 21))  # one extra voxel 20 voxels away
    # predicted -> target: distances [0, 20 * 1.5 mm], 95th percentile 0.95 * 30; target -> predicted: [0].
    assert hausdorff95(predicted, target, 1, (1.0, 1.0, 1.5)) == pytest.approx(0.95 * 30.0)
    assert hausdorff95(target, predicted, 1, (1.0, 1.0, 1.5)) == pytest.approx(0.95 * 30.0)


def test_hausdorff95_uses_only_surface_voxels() -> None:
    target = np.zeros((9, 9, 9), np.uint8)
    target[2:7, 2:7, 2:7] = 1
    predicted = target.copy()
    predicted[4, 4, 4] = 2  # a hole in the middle of class 1
    # predicted -> target: 98 outer-shell voxels at 0 mm and the hole's 6 face neighbours at 1 mm
    # (the 20 other inner voxels are not surface); 95th percentile of 98 zeros and 6 ones = 0.85.
    # target -> predicted: the outer shell is still there, all 0 mm.
    assert hausdorff95(target, target, 1, (1, 1, 1)) == 0.0
    assert hausdorff95(predicted, target, 1, (1, 1, 1)) == pytest.approx(0.85)


def test_hausdorff95_of_absent_classes() -> None:
    empty, one = np.zeros((6, 6, 6), np.uint8), _points((6, 6, 6), (2, 2, 2))
    assert hausdorff95(empty, empty, 1, (1, 1, 1)) == 0.0
    assert hausdorff95(one, empty, 1, (1, 1, 1)) == np.inf
    assert hausdorff95(empty, one, 1, (1, 1, 1)) == np.inf


@pytest.mark.parametrize(
    ("predicted_shape", "voxel_size"),
    [((6, 6, 5), (1, 1, 1)), ((6, 6, 6), (1, 1)), ((6, 6, 6), (1, 0, 1)), ((6, 6, 6), (1, np.nan, 1))],
)
def test_hausdorff95_refuses_bad_arguments(predicted_shape: tuple, voxel_size: tuple) -> None:
    with pytest.raises(ValueError, match="Expected"):
        hausdorff95(np.zeros(predicted_shape, np.uint8), np.zeros((6, 6, 6), np.uint8), 1, voxel_size)


def test_volumes_and_absolute_volume_difference_in_cubic_millimetres() -> None:
    predicted = _points((4, 4, 4), (0, 0, 0), (0, 0, 1), (0, 0, 2))
    target = _points((4, 4, 4), (1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 0, 3), (2, 0, 0))
    voxel_size = (1.0, 2.0, 3.0)  # 6 mm^3 per voxel
    assert class_volume(target, 1, voxel_size) == 30.0
    assert volume_difference(predicted, target, 1, voxel_size) == 12.0
    assert volume_difference(target, predicted, 1, voxel_size) == 12.0  # absolute: symmetric
    assert volume_difference(predicted, target, 2, voxel_size) == 0.0  # absent from both
    with pytest.raises(ValueError, match="one shape"):
        volume_difference(predicted, target[:3], 1, voxel_size)
