"""Turn one (image, label map) pair on its native grid into a cache-ready `Subject`."""

from __future__ import annotations

import numpy as np

from brainseg_tf.config import PreprocessConfig
from brainseg_tf.datasets.cache import Split, Subject
from brainseg_tf.errors import DatasetError
from brainseg_tf.geometry import conform
from brainseg_tf.intensity import normalize_intensity
from brainseg_tf.io import Volume
from brainseg_tf.labels import LabelSet, UnknownPolicy

GRID_TOLERANCE_MM = 1e-3


def prepare_subject(
    subject_id: str,
    image: Volume,
    label_map: Volume,
    label_set: LabelSet,
    preprocess: PreprocessConfig,
    split: Split,
    unknown: UnknownPolicy = "error",
) -> Subject:
    """Map stored labels to classes, conform both volumes to RAS+ at the target voxel size, normalise.

    Raises:
        DatasetError: image and label map are not on the same grid, or labels fall outside the set.
    """
    if image.shape != label_map.shape or not np.allclose(image.affine, label_map.affine, atol=GRID_TOLERANCE_MM):
        raise DatasetError(
            f"Subject {subject_id}: image and label map must share one grid. "
            f"Received: image {image.shape}, label map {label_map.shape} (or different affines)"
        )
    try:
        classes = label_set.to_classes(label_map.array, unknown)
    except ValueError as error:
        raise DatasetError(f"Subject {subject_id}: {error}") from None
    conformed_image, _ = conform(image, preprocess.voxel_size, "linear")
    conformed_classes, _ = conform(label_map.with_array(classes), preprocess.voxel_size, "nearest")
    normalised = normalize_intensity(conformed_image.array, preprocess.lower_percentile, preprocess.upper_percentile)
    return Subject(
        subject_id=subject_id,
        image=normalised,
        classes=conformed_classes.array.astype(np.uint8),
        affine=conformed_image.affine,
        split=split,
    )
