"""Segmentation losses: soft Dice plus cross-entropy, one class per family (softmax / sigmoid).

Soft Dice is computed per class over the whole batch (sums over the batch and spatial axes, not
per sample), ``dice_c = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)``, so a class
absent from the batch and not predicted scores 1. The loss uses ``1 - mean_c(dice_c)``.
Both losses compute one value per batch and hand it to Keras repeated once per sample, so that
Keras's reduction (the mean over the batch gives the same value back) and its per-replica loss
scaling under `tf.distribute` apply as for any built-in loss; sample weights are not supported.
They work on 2D and 3D outputs alike.
"""

from __future__ import annotations

import keras
from keras import ops

_EPSILON = 1e-7


def soft_dice_per_class(y_true, y_pred, smooth: float = 1e-5):
    """Soft Dice of each channel over the batch and spatial axes: shape ``(channels,)``.

    Args:
        y_true: one-hot or binary targets, same shape as ``y_pred`` (channels last).
        y_pred: probabilities.
        smooth: added to numerator and denominator; keeps empty classes at 1.
    """
    axes = tuple(range(len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="brainseg_tf")
class DiceCrossEntropy(keras.losses.Loss):
    """Softmax family: ``dice_weight * (1 - soft Dice) + crossentropy_weight * categorical cross-entropy``.

    Soft Dice is averaged over the foreground classes (channels 1..C-1); the background channel 0
    is left out unless ``include_background=True``. The cross-entropy covers every class.

    Args:
        dice_weight: weight of the soft Dice term.
        crossentropy_weight: weight of the cross-entropy term.
        include_background: average the Dice over channel 0 as well.
        smooth: Dice smoothing constant.

    Targets are one-hot ``(N, ..., C)`` or integer class indices ``(N, ..., 1)``; predictions are
    softmax probabilities ``(N, ..., C)``.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        crossentropy_weight: float = 1.0,
        include_background: bool = False,
        smooth: float = 1e-5,
        name: str = "dice_crossentropy",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        _check_weights(dice_weight, crossentropy_weight)
        self.dice_weight = float(dice_weight)
        self.crossentropy_weight = float(crossentropy_weight)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        num_classes = y_pred.shape[-1]
        y_true = _one_hot_targets(y_true, num_classes)
        dice = soft_dice_per_class(y_true, y_pred, self.smooth)
        if not self.include_background and num_classes > 1:
            dice = dice[1:]
        dice_loss = 1.0 - ops.mean(dice)
        probabilities = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
        crossentropy = ops.mean(-ops.sum(y_true * ops.log(probabilities), axis=-1))
        return _per_sample(self.dice_weight * dice_loss + self.crossentropy_weight * crossentropy, y_pred)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            dice_weight=self.dice_weight,
            crossentropy_weight=self.crossentropy_weight,
            include_background=self.include_background,
            smooth=self.smooth,
        )
        return config


@keras.saving.register_keras_serializable(package="brainseg_tf")
class DiceBinaryCrossEntropy(keras.losses.Loss):
    """Sigmoid family: ``dice_weight * (1 - soft Dice) + crossentropy_weight * weighted binary cross-entropy``.

    The binary cross-entropy is a weighted mean over voxels, positives weighted ``w`` and negatives 1:
    ``sum(w_i * bce_i) / sum(w_i)``. With ``positive_weight=None`` the weight is set per batch to
    ``(1 - f) / f`` from the positive fraction ``f``, so positives and negatives contribute equally
    (batches with no positives or no negatives fall back to ``w = 1``).

    Args:
        dice_weight: weight of the soft Dice term (Dice of the one output channel).
        crossentropy_weight: weight of the cross-entropy term.
        positive_weight: fixed weight of positive voxels, or None for the balanced per-batch weight.
        smooth: Dice smoothing constant.

    Targets are binary ``(N, ..., 1)`` (or without the channel axis); predictions are sigmoid
    probabilities ``(N, ..., 1)``.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        crossentropy_weight: float = 1.0,
        positive_weight: float | None = None,
        smooth: float = 1e-5,
        name: str = "dice_binary_crossentropy",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        _check_weights(dice_weight, crossentropy_weight)
        if positive_weight is not None and not positive_weight > 0:
            raise ValueError(f"Expected positive_weight > 0 or None. Received: positive_weight={positive_weight!r}")
        self.dice_weight = float(dice_weight)
        self.crossentropy_weight = float(crossentropy_weight)
        self.positive_weight = None if positive_weight is None else float(positive_weight)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(_with_channel_axis(y_true, y_pred), "float32")
        dice_loss = 1.0 - ops.mean(soft_dice_per_class(y_true, y_pred, self.smooth))
        probabilities = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
        bce = -(y_true * ops.log(probabilities) + (1.0 - y_true) * ops.log(1.0 - probabilities))
        weights = 1.0 + (self._positive_weight(y_true) - 1.0) * y_true
        crossentropy = ops.sum(weights * bce) / ops.sum(weights)
        return _per_sample(self.dice_weight * dice_loss + self.crossentropy_weight * crossentropy, y_pred)

    def _positive_weight(self, y_true):
        if self.positive_weight is not None:
            return ops.convert_to_tensor(self.positive_weight, "float32")
        fraction = ops.mean(y_true)
        balanced = (1.0 - fraction) / ops.maximum(fraction, _EPSILON)
        return ops.where((fraction > 0) & (fraction < 1), balanced, 1.0)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            dice_weight=self.dice_weight,
            crossentropy_weight=self.crossentropy_weight,
            positive_weight=self.positive_weight,
            smooth=self.smooth,
        )
        return config


def _per_sample(batch_value, y_pred):
    """The batch's loss repeated for each sample: shape (N,), mean equal to ``batch_value``."""
    return ops.ones((ops.shape(y_pred)[0],), dtype="float32") * batch_value


def _one_hot_targets(y_true, num_classes: int):
    """One-hot targets as float32; integer class maps ``(N, ..., 1)`` are expanded."""
    if y_true.shape[-1] == 1 and num_classes > 1:
        return ops.one_hot(ops.cast(ops.squeeze(y_true, axis=-1), "int32"), num_classes, dtype="float32")
    return ops.cast(y_true, "float32")


def _with_channel_axis(y_true, y_pred):
    if len(y_true.shape) == len(y_pred.shape) - 1:
        return ops.expand_dims(y_true, -1)
    return y_true


def _check_weights(dice_weight: float, crossentropy_weight: float) -> None:
    if dice_weight < 0 or crossentropy_weight < 0 or dice_weight + crossentropy_weight == 0:
        raise ValueError(
            "Expected non-negative dice_weight and crossentropy_weight, not both zero. "
            f"Received: dice_weight={dice_weight!r}, crossentropy_weight={crossentropy_weight!r}"
        )
