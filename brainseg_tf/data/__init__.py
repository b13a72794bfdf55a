"""The shared data generator: sampling, augmentation, target encoding and the tf.data pipeline."""

from brainseg_tf.data.augmentation import Augmentation, check_augment_config, draw_augmentation, flip_left_right
from brainseg_tf.data.encoding import TargetEncoding
from brainseg_tf.data.pipeline import (
    SampleSource,
    SampleSpec,
    check_pipeline_config,
    describe_sample_spec,
    make_dataset,
    steps_per_epoch,
)
from brainseg_tf.data.sampling import ClassPoints, SubjectSampler, box_shape, crop, in_plane_axes, index_classes, sampling_axes

__all__ = [
    "Augmentation",
    "ClassPoints",
    "SampleSource",
    "SampleSpec",
    "SubjectSampler",
    "TargetEncoding",
    "box_shape",
    "check_augment_config",
    "check_pipeline_config",
    "crop",
    "describe_sample_spec",
    "draw_augmentation",
    "flip_left_right",
    "in_plane_axes",
    "index_classes",
    "make_dataset",
    "sampling_axes",
    "steps_per_epoch",
]
