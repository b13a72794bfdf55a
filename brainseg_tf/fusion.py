"""The ensemble's fusion rule: single-class sigmoid members into one label map, in training and inference alike.

The rule: a voxel takes the class of the member with the highest probability (the lower class on a
tie) when that probability is above `FUSION_THRESHOLD`; otherwise it is background (class 0). A member
at exactly the threshold is background. `fused_scores` encodes the rule as per-class scores, so that
they can be resampled to another grid before the labels are taken; their argmax is `fused_labels`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

FUSION_THRESHOLD = 0.5
"""A voxel is background unless its most probable member is strictly above this probability."""


def fused_labels(member_probabilities: Sequence[np.ndarray], class_indices: Sequence[int], num_classes: int) -> np.ndarray:
    """Class indices uint8 (...) of the fusion rule.

    Args:
        member_probabilities: one array (..., 1) per member, all of one shape.
        class_indices: the foreground class each member segments, distinct, in [1, num_classes).
        num_classes: classes of the label set, background included.

    Raises:
        ValueError: members and class indices disagree, or shapes differ.
    """
    members = _checked_members(member_probabilities, class_indices, num_classes)
    winner, highest = _most_probable(members, class_indices)
    return np.where(highest > FUSION_THRESHOLD, winner, np.uint8(0))


def fused_scores(member_probabilities: Sequence[np.ndarray], class_indices: Sequence[int], num_classes: int) -> np.ndarray:
    """Per-class scores float32 (..., num_classes) whose argmax is `fused_labels`.

    Each member's probability goes to its class's channel, ``1 - max(member probabilities)`` to the
    background channel, 0 to classes without a member. With `FUSION_THRESHOLD` at 0.5 the argmax is
    exactly the rule: ``1 - p`` is exact in float32 for ``p`` in [0.5, 1], so background wins (it is
    the lowest class) where the highest member is at or below 0.5.

    Raises:
        ValueError: members and class indices disagree, or shapes differ.
    """
    members = _checked_members(member_probabilities, class_indices, num_classes)
    scores = np.zeros((*members[0].shape, num_classes), dtype=np.float32)
    np.subtract(1.0, functools.reduce(np.maximum, members), out=scores[..., 0])
    for class_index, probabilities in zip(class_indices, members):
        scores[..., class_index] = probabilities
    return scores


def _most_probable(members: list[np.ndarray], class_indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(class of the most probable member, uint8; its probability): the lower class keeps a tie."""
    ordered = sorted(zip(class_indices, members), key=lambda pair: pair[0])
    winner = np.full(members[0].shape, ordered[0][0], dtype=np.uint8)
    highest = ordered[0][1].copy()
    for class_index, probabilities in ordered[1:]:
        winner[probabilities > highest] = class_index  # strictly: the lower class keeps a tie
        np.maximum(highest, probabilities, out=highest)
    return winner, highest


def _checked_members(member_probabilities: Sequence[np.ndarray], class_indices: Sequence[int], num_classes: int) -> list[np.ndarray]:
    """The members as float32 arrays without their channel axis, after the consistency checks."""
    if len(member_probabilities) != len(class_indices) or not member_probabilities:
        raise ValueError(
            f"Expected one class index per member. Received: {len(member_probabilities)} members, class_indices={list(class_indices)}"
        )
    if len(set(class_indices)) != len(class_indices) or not all(0 < k < num_classes for k in class_indices):
        raise ValueError(f"Expected distinct class indices in [1, {num_classes}). Received: {list(class_indices)}")
    shapes = {np.shape(p) for p in member_probabilities}
    if len(shapes) != 1 or next(iter(shapes))[-1:] != (1,):
        raise ValueError(f"Expected member probabilities of one shape (..., 1). Received shapes: {sorted(shapes)}")
    return [np.asarray(p, np.float32)[..., 0] for p in member_probabilities]
