"""Networks of both families on one U-Net backbone, their losses, metrics and cost counts."""

from brainseg_tf.models.factory import (
    FAMILIES,
    build_segmenter,
    compile_segmenter,
    count_flops,
    dice_metric_name,
    segmentation_head,
)
from brainseg_tf.models.losses import DiceBinaryCrossEntropy, DiceCrossEntropy, soft_dice_per_class
from brainseg_tf.models.metrics import DiceScore
from brainseg_tf.models.unet import build_backbone, check_input_shape, padded_shape

__all__ = [
    "FAMILIES",
    "DiceBinaryCrossEntropy",
    "DiceCrossEntropy",
    "DiceScore",
    "build_backbone",
    "build_segmenter",
    "check_input_shape",
    "compile_segmenter",
    "count_flops",
    "dice_metric_name",
    "padded_shape",
    "segmentation_head",
    "soft_dice_per_class",
]
