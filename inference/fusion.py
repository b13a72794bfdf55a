"""From probabilities to one label map: softmax argmax, or fusion of single-class sigmoid members.

Ensemble rule: each voxel takes the class of the member with the highest sigmoid probability,
unless every member is below ``threshold``: then it is background (class 0).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from inference.threads import run_tasks


def softmax_labels(probabilities: np.ndarray, workers: int = 1) -> np.ndarray:
    """Class indices (uint8) by argmax over the last axis of softmax probabilities (..., K).

    With ``workers`` above 1, blocks of the first axis are taken at once (NumPy's argmax lets go
    of the GIL): the same labels, sooner on several cores.
    """
    probabilities = np.asarray(probabilities)
    if workers <= 1 or probabilities.ndim < 2 or len(probabilities) < workers:
        return np.argmax(probabilities, axis=-1).astype(np.uint8)
    labels = np.empty(probabilities.shape[:-1], dtype=np.uint8)
    bounds = np.linspace(0, len(probabilities), workers + 1).astype(int)

    def label(rows: slice) -> None:
        labels[rows] = np.argmax(probabilities[rows], axis=-1)

    run_tasks([functools.partial(label, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])], workers)
    return labels


def fused_scores(member_probabilities: Sequence[np.ndarray], class_indices: Sequence[int], num_classes: int) -> np.ndarray:
    """Per-class scores float32 (..., num_classes) of single-class sigmoid members.

    Each member's probability goes to its class's channel, ``1 - max(member probabilities)`` to the
    background channel, 0 to classes without a member. Their argmax is the fusion rule at threshold
    0.5 (`fuse_sigmoid_members`; a member at exactly 0.5 ties with background and loses), which lets
    the scores be resampled to another grid before the labels are taken.

    Args:
        member_probabilities: one array (..., 1) per member, all of one shape.
        class_indices: the foreground class each member segments, distinct, in [1, num_classes).
        num_classes: classes of the label set, background included.

    Raises:
        ValueError: members and class indices disagree, or shapes differ.
    """
    return _scores(_checked_members(member_probabilities, class_indices, num_classes), class_indices, num_classes)


def fused_labels(member_probabilities: Sequence[np.ndarray], class_indices: Sequence[int], num_classes: int) -> np.ndarray:
    """The argmax of `fused_scores`, uint8 (...), without building the scores.

    The class of the most probable member (the lowest class on ties), background where no member
    is above 0.5. Exactly the argmax of the scores: ``1 - p`` is exact in float32 for ``p`` in
    [0.5, 1], so background wins where the highest member is at or below 0.5.

    Raises:
        ValueError: members and class indices disagree, or shapes differ.
    """
    members = _checked_members(member_probabilities, class_indices, num_classes)
    winner, highest = _most_probable(members, class_indices)
    return np.where(highest > 0.5, winner, np.uint8(0))


def fuse_sigmoid_members(
    member_probabilities: Sequence[np.ndarray], class_indices: Sequence[int], num_classes: int, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse single-class sigmoid outputs into class indices and per-class scores.

    Args:
        member_probabilities: one array (..., 1) per member, all of one shape.
        class_indices: the foreground class each member segments, distinct, in [1, num_classes).
        num_classes: classes of the label set, background included.
        threshold: below it in every member, a voxel is background.

    Returns:
        (labels uint8 (...), scores float32 (..., num_classes)): the class of the most probable
        member (the lowest class on ties, as the argmax of the scores) or background, and the `fused_scores`.

    Raises:
        ValueError: members and class indices disagree, or shapes differ.
    """
    members = _checked_members(member_probabilities, class_indices, num_classes)
    winner, highest = _most_probable(members, class_indices)
    labels = np.where(highest >= threshold, winner, np.uint8(0))
    return labels, _scores(members, class_indices, num_classes)


def _most_probable(members: list[np.ndarray], class_indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(class of the most probable member, uint8; its probability): the lower class keeps a tie."""
    ordered = sorted(zip(class_indices, members), key=lambda pair: pair[0])
    winner = np.full(members[0].shape, ordered[0][0], dtype=np.uint8)
    highest = ordered[0][1].copy()
    for class_index, probabilities in ordered[1:]:
        winner[probabilities > highest] = class_index  # strictly: the lower class keeps a tie
        np.maximum(highest, probabilities, out=highest)
    return winner, highest


def _scores(members: list[np.ndarray], class_indices: Sequence[int], num_classes: int) -> np.ndarray:
    """`fused_scores` of members already checked by `_checked_members`."""
    scores = np.zeros((*members[0].shape, num_classes), dtype=np.float32)
    np.subtract(1.0, functools.reduce(np.maximum, members), out=scores[..., 0])
    for class_index, probabilities in zip(class_indices, members):
        scores[..., class_index] = probabilities
    return scores


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
