"""Validation scores of the fused sigmoid ensemble, on the fixed validation samples every network is scored on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainseg_tf.fusion import fused_labels
from brainseg_tf.labels import LabelSet
from brainseg_tf.models import dice_metric_name
from brainseg_tf.scoring import dice_scores

logger = logging.getLogger(__name__)


def ensemble_validation_metrics(
    member_bundles: Sequence[Path],
    class_indices: Sequence[int],
    label_set: LabelSet,
    samples: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    mirrored: dict[int, int] | None = None,
) -> dict[str, float]:
    """Per-class Dice (``val_dice_<class>``) of the members' fused prediction on the validation samples.

    Members are fused by the rule inference uses (`brainseg_tf.fusion.fused_labels`): each voxel takes
    the class of the most confident member, or background unless that member is above 0.5.

    Args:
        member_bundles: one single-class model bundle per class in `class_indices`.
        class_indices: the foreground class of each member.
        label_set: the task's classes.
        samples: validation images (N, ...) and class maps (N, ...), from `training.inputs.validation_samples`.
        batch_size: prediction batch size.
        mirrored: member class -> the partner class it also segments on the mirrored samples (axis 1 of the batch:
            the volume's left/right axis for axial and coronal slices and for patches, as the flip augmentation has it).
    """
    from brainseg_tf.bundle import load_keras_model

    images, classes = samples
    mirrored = mirrored or {}
    probabilities, fused_classes = [], list(class_indices)
    for path, index in zip(member_bundles, class_indices):
        model = load_keras_model(path)
        probabilities.append(model.predict(images, batch_size=batch_size, verbose=0))
        if index in mirrored:
            probabilities.append(model.predict(np.ascontiguousarray(images[:, ::-1]), batch_size=batch_size, verbose=0)[:, ::-1])
            fused_classes.append(mirrored[index])
    fused = fused_labels(probabilities, fused_classes, label_set.num_classes)
    scores = dice_scores(fused, classes, fused_classes)
    return {f"val_{dice_metric_name(label_set.names[index])}": float(scores[index]) for index in sorted(fused_classes)}
