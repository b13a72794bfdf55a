"""From probabilities to one label map: softmax argmax, or fusion of single-class sigmoid members.

Ensemble rule: each voxel takes the class of the member with the highest sigmoid probability,
unless every member is below ``threshold``: then it is background (class 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax_labels(probabilities: np.ndarray) -> np.ndarray:
    """Class indices (uint8) by argmax over the last axis of softmax probabilities (..., K)."""
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


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
        (labels uint8 (...), scores float32 (..., num_classes)): member probabilities in their
        classes' channels, ``1 - max(member probabilities)`` in the background channel.

    Raises:
        ValueError: members and class indices disagree, or shapes differ.
    """
    if len(member_probabilities) != len(class_indices) or not member_probabilities:
        raise ValueError(
            f"Expected one class index per member. Received: {len(member_probabilities)} members, class_indices={list(class_indices)}"
        )
    if len(set(class_indices)) != len(class_indices) or not all(0 < k < num_classes for k in class_indices):
        raise ValueError(f"Expected distinct class indices in [1, {num_classes}). Received: {list(class_indices)}")
    shapes = {np.shape(p) for p in member_probabilities}
    if len(shapes) != 1 or next(iter(shapes))[-1:] != (1,):
        raise ValueError(f"Expected member probabilities of one shape (..., 1). Received shapes: {sorted(shapes)}")
    stacked = np.concatenate([np.asarray(p, np.float32) for p in member_probabilities], axis=-1)
    best = np.argmax(stacked, axis=-1)
    highest = np.take_along_axis(stacked, best[..., None], axis=-1)[..., 0]
    labels = np.where(highest >= threshold, np.asarray(class_indices, dtype=np.uint8)[best], 0).astype(np.uint8)
    scores = np.zeros((*stacked.shape[:-1], num_classes), dtype=np.float32)
    scores[..., list(class_indices)] = stacked
    scores[..., 0] = 1.0 - highest
    return labels, scores
