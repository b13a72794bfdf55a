"""The ensemble's one fusion rule (`brainseg_tf.fusion`), at and around its threshold."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.fusion import FUSION_THRESHOLD, fused_labels, fused_scores

HALF = np.float32(FUSION_THRESHOLD)
BELOW = np.nextafter(HALF, np.float32(0.0))
ABOVE = np.nextafter(HALF, np.float32(1.0))


def _members(*rows: tuple[float, ...]) -> list[np.ndarray]:
    """One (N, 1) float32 member per column of ``rows`` (one row per voxel)."""
    table = np.asarray(rows, dtype=np.float32)
    return [table[:, [k]] for k in range(table.shape[1])]


@pytest.mark.parametrize(
    ("voxel", "expected"),
    [
        ((HALF, 0.1, 0.2), 0),  # exactly at the threshold: background
        ((BELOW, 0.1, 0.2), 0),  # the float just below: background
        ((ABOVE, 0.1, 0.2), 1),  # the float just above: the member's class
        ((0.1, 0.2, 0.3), 0),  # every member low
        ((0.0, 0.0, 0.0), 0),
        ((0.9, 0.9, 0.2), 1),  # a tie between members: the lower class
        ((0.2, 0.9, 0.9), 2),
        ((ABOVE, ABOVE, ABOVE), 1),  # a tie just above the threshold
        ((HALF, HALF, HALF), 0),  # a tie at the threshold
        ((0.6, 0.7, 0.65), 2),  # the most probable member wins
        ((1.0, 0.0, 0.0), 1),
        ((0.0, 0.0, 1.0), 3),
    ],
)
def test_fusion_rule_table(voxel: tuple[float, ...], expected: int) -> None:
    members = _members(voxel)
    classes = [1, 2, 3]
    labels = fused_labels(members, classes, num_classes=4)
    scores = fused_scores(members, classes, num_classes=4)
    assert labels.tolist() == [expected]
    assert int(np.argmax(scores[0])) == expected  # the scores encode the same rule


def test_member_order_does_not_change_the_labels() -> None:
    rng = np.random.default_rng(3)
    members = [rng.random((50, 1), dtype=np.float32) for _ in range(3)]
    members[1][:10] = members[0][:10]  # ties
    members[2][10:20] = HALF
    members[0][10:20] = members[1][10:20] = 0.1
    forward = fused_labels(members, [1, 2, 3], num_classes=4)
    backward = fused_labels(members[::-1], [3, 2, 1], num_classes=4)
    assert np.array_equal(forward, backward)
    assert np.all(forward[10:20] == 0) and np.all(forward[:10] != 2)


def test_fused_scores_per_channel() -> None:
    gray = np.array([0.9, 0.2, 0.6, 0.1], np.float32)[:, None]
    white = np.array([0.3, 0.8, 0.7, 0.2], np.float32)[:, None]
    scores = fused_scores([gray, white], [2, 3], num_classes=4)
    assert fused_labels([gray, white], [2, 3], num_classes=4).tolist() == [2, 3, 3, 0]
    assert np.allclose(scores[:, 2], gray[:, 0]) and np.allclose(scores[:, 3], white[:, 0])
    assert np.allclose(scores[:, 0], [0.1, 0.2, 0.3, 0.8]) and np.all(scores[:, 1] == 0)


def test_labels_are_the_argmax_of_the_scores_on_random_members() -> None:
    rng = np.random.default_rng(12)
    members = [rng.random((40, 30, 1), dtype=np.float32) ** power for power in (1.0, 2.0, 0.5)]
    members[1][:5] = members[0][:5]
    members[2][5:8] = HALF
    members[0][5:8] = members[1][5:8] = 0.25
    classes = [3, 1, 2]
    labels = fused_labels(members, classes, num_classes=5)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, np.argmax(fused_scores(members, classes, num_classes=5), axis=-1))
    assert np.all(labels[5:8] == 0) and set(np.unique(labels)) == {0, 1, 2, 3}


def test_validation_scores_with_the_same_rule() -> None:
    """training/evaluate.py fuses with the library's rule: a member at exactly 0.5 is background there too."""
    import inspect

    import training.evaluate as evaluate

    assert evaluate.fused_labels is fused_labels
    assert "fused_labels(" in inspect.getsource(evaluate.ensemble_validation_metrics)


@pytest.mark.parametrize(
    ("members", "classes", "message"),
    [
        ([np.zeros((3, 1))], [1, 2], "one class index per member"),
        ([np.zeros((3, 1)), np.zeros((3, 1))], [1, 1], "distinct"),
        ([np.zeros((3, 1))], [4], "distinct class indices in \\[1, 4\\)"),
        ([np.zeros((3, 1)), np.zeros((4, 1))], [1, 2], "one shape"),
        ([np.zeros((3,))], [1], "one shape"),
        ([], [], "one class index per member"),
    ],
)
def test_fusion_refuses_inconsistent_members(members, classes, message) -> None:
    for fuse in (fused_labels, fused_scores):
        with pytest.raises(ValueError, match=message):
            fuse(members, classes, num_classes=4)
