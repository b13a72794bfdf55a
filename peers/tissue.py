"""Pure numpy / scikit-learn pieces of the peer pipelines: tissue classes by mean intensity, the Gaussian
mixture on a brain mask, and Dice. Importable from the peers' venv and from the project's (no brainseg_tf).

Label convention (the project's ``TISSUE`` label set): 0 background, 1 CSF, 2 gray matter, 3 white matter.
On a T1 image, CSF is darkest and white matter brightest, so classes are numbered by their mean intensity.
Arrays are any 3D voxel order; image, mask and labels of one call share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLASS_NAMES = ("CSF", "gray matter", "white matter")
"""Names of tissue classes 1, 2, 3 (as `brainseg_tf.labels.TISSUE` names them)."""
DICE_KEYS = ("brain", *CLASS_NAMES)
GMM_SAMPLES = 200_000
"""At most this many mask voxels (a seeded random subset) fit the mixture; every mask voxel is then classified."""


def order_by_mean(labels: np.ndarray, image: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Renumber clusters 1..n so that class 1 has the lowest mean image intensity and n the highest.

    Args:
        labels: cluster numbers 1..n inside the brain, 0 outside (any integer dtype).
        image: intensities, same shape.
        n_classes: how many clusters; a cluster with no voxel sorts last.

    Returns:
        uint8 labels of the same shape, 0 kept where ``labels`` is 0.

    Raises:
        ValueError: shapes differ, or a label is outside 0..n_classes.
    """
    labels, image = np.asarray(labels), np.asarray(image)
    if labels.shape != image.shape:
        raise ValueError(f"Expected labels and image of one shape. Received: {labels.shape} and {image.shape}")
    present = np.unique(labels)
    if present.size and (present.min() < 0 or present.max() > n_classes):
        raise ValueError(f"Expected labels in 0..{n_classes}. Received: values {present.tolist()}")
    means = [float(image[labels == k].mean()) if np.any(labels == k) else np.inf for k in range(1, n_classes + 1)]
    rank = np.argsort(np.argsort(means, kind="stable"), kind="stable")  # rank[k - 1]: position of cluster k
    lookup = np.concatenate([[0], rank + 1]).astype(np.uint8)
    return lookup[labels.astype(np.intp)]


def gmm_tissue(image: np.ndarray, mask: np.ndarray, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    """A Gaussian mixture of the intensities inside ``mask``: CSF < gray < white matter by component mean.

    The mixture is fitted on at most `GMM_SAMPLES` mask voxels (seeded subset), then every mask voxel is
    labelled with its most probable component.

    Args:
        image: intensities, 3D.
        mask: the brain, nonzero inside; same shape.
        n_classes: mixture components.
        seed: the subset's and the mixture's random state.

    Returns:
        uint8 labels 0..n_classes (0 outside the mask), ordered as `order_by_mean`.

    Raises:
        ValueError: shapes differ or the mask holds fewer voxels than ``n_classes``.
    """
    from sklearn.mixture import GaussianMixture

    image, inside = np.asarray(image, np.float64), np.asarray(mask) > 0
    if image.shape != inside.shape:
        raise ValueError(f"Expected image and mask of one shape. Received: {image.shape} and {inside.shape}")
    values = image[inside].reshape(-1, 1)
    if values.shape[0] < n_classes:
        raise ValueError(f"Expected a mask of at least {n_classes} voxels. Received: {values.shape[0]}")
    rng = np.random.default_rng(seed)
    sample = values if values.shape[0] <= GMM_SAMPLES else values[rng.choice(values.shape[0], GMM_SAMPLES, replace=False)]
    mixture = GaussianMixture(n_classes, covariance_type="full", random_state=seed).fit(sample)
    rank = np.argsort(np.argsort(mixture.means_[:, 0], kind="stable"), kind="stable")
    labels = np.zeros(image.shape, np.uint8)
    labels[inside] = rank[mixture.predict(values)] + 1
    return labels


def dice(predicted: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks, ``2|P & T| / (|P| + |T|)``; 1.0 when both are empty (as `brainseg_tf.scoring`)."""
    predicted, target = np.asarray(predicted, bool), np.asarray(target, bool)
    if predicted.shape != target.shape:
        raise ValueError(f"Expected predicted and target of one shape. Received: {predicted.shape} and {target.shape}")
    total = int(predicted.sum()) + int(target.sum())
    return 2.0 * int((predicted & target).sum()) / total if total else 1.0


def score(mask: np.ndarray, reference_brain: np.ndarray, labels: np.ndarray | None = None,
          reference_tissue: np.ndarray | None = None) -> dict[str, float | None]:
    """Dice of a brain mask and, when given, of tissue labels 1..3 against a case's references (one grid).

    Returns:
        `DICE_KEYS` -> Dice; the tissue classes None without ``labels``.
    """
    scores: dict[str, float | None] = {"brain": dice(np.asarray(mask) > 0, np.asarray(reference_brain) > 0)}
    for number, name in enumerate(CLASS_NAMES, start=1):
        scores[name] = None if labels is None or reference_tissue is None else dice(np.asarray(labels) == number,
                                                                                   np.asarray(reference_tissue) == number)
    return scores


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None (None when none is)."""
    kept = [float(v) for v in values if v is not None]
    return float(np.median(kept)) if kept else None
