"""Turn one (image, label map) pair on its native grid into a cache-ready `Subject`."""

from __future__ import annotations

import numpy as np

from brainseg_tf.config import PreprocessConfig
from brainseg_tf.datasets.cache import Split, Subject
from brainseg_tf.errors import DatasetError
from brainseg_tf.io import Image, LabelMap
from brainseg_tf.labels import LabelSet, UnknownPolicy
from brainseg_tf.preprocessing import Preprocessing

GRID_TOLERANCE_MM = 1e-3


def prepare_subject(
    subject_id: str,
    image: Image,
    label_map: LabelMap,
    label_set: LabelSet,
    preprocess: PreprocessConfig,
    split: Split,
    unknown: UnknownPolicy = "error",
) -> Subject:
    """Map stored labels to classes, then prepare the image and its classes as inference prepares an image
    (`brainseg_tf.preprocessing.Preprocessing`: RAS+ at the target voxel size, intensities normalised).

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
    recipe = Preprocessing.from_config(preprocess)
    prepared = recipe.prepare(Image(image.array, image.affine))
    conformed_classes = recipe.prepare_label_map(LabelMap(classes, label_map.affine))
    return Subject(
        subject_id=subject_id,
        image=prepared.array,
        classes=conformed_classes.array.astype(np.uint8),
        affine=prepared.inverse.conformed_grid.affine,
        split=split,
    )
