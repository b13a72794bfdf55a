"""Scores of a label map against a reference: per-class overlap, surface distance and volume agreement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dice_scores(predicted: np.ndarray, target: np.ndarray, class_indices: Sequence[int]) -> dict[int, float]:
    """Hard Dice of each class over all voxels of all samples, ``2|P & T| / (|P| + |T|)``; 1.0 when the
    class is absent from both (as `brainseg_tf.models.DiceScore` counts it).

    Args:
        predicted: class indices, any shape.
        target: class indices, same shape.
        class_indices: the classes scored.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"Expected predicted and target of one shape. Received: {predicted.shape} and {target.shape}")
    scores = {}
    for index in class_indices:
        in_prediction, in_target = predicted == index, target == index
        total = int(in_prediction.sum()) + int(in_target.sum())
        scores[index] = 2.0 * int((in_prediction & in_target).sum()) / total if total else 1.0
    return scores
