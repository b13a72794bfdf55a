"""Class indices from per-class scores (softmax probabilities or fused ensemble scores), in blocks on several cores."""

from __future__ import annotations

import functools

import numpy as np

from inference.threads import run_tasks


def argmax_labels(scores: np.ndarray, workers: int = 1) -> np.ndarray:
    """Class indices (uint8) by argmax over the last axis of scores (..., K); the lowest class on a tie.

    With ``workers`` above 1, blocks of the first axis are taken at once (NumPy's argmax lets go
    of the GIL): the same labels, sooner on several cores.
    """
    scores = np.asarray(scores)
    if workers <= 1 or scores.ndim < 2 or len(scores) < workers:
        return np.argmax(scores, axis=-1).astype(np.uint8)
    labels = np.empty(scores.shape[:-1], dtype=np.uint8)
    bounds = np.linspace(0, len(scores), workers + 1).astype(int)

    def label(rows: slice) -> None:
        labels[rows] = np.argmax(scores[rows], axis=-1)

    run_tasks([functools.partial(label, slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])], workers)
    return labels
