"""Per-class Dice as a stateful Keras metric, for softmax and sigmoid outputs alike."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="brainseg_tf")
class DiceScore(keras.metrics.Metric):
    """Hard Dice of one class, accumulated over every batch seen since the last reset.

    ``2 * |P & T| / (|P| + |T|)`` from the summed counts (not a mean of per-batch scores); 1.0 when
    the class is absent from both prediction and target.

    * Softmax outputs ``(N, ..., C)`` with ``C > 1``: the prediction is ``argmax == class_index``;
      targets are one-hot ``(N, ..., C)`` or integer class maps ``(N, ..., 1)``.
    * Sigmoid outputs ``(N, ..., 1)``: the prediction is ``p > threshold``; targets are binary and
      ``class_index`` must be 0 (the one output channel).

    Args:
        class_index: output channel scored.
        threshold: sigmoid decision threshold.
        name: metric name; ``dice_<class_index>`` by default (`compile_segmenter` uses ``dice_<class name>``).
    """

    def __init__(self, class_index: int = 1, threshold: float = 0.5, name: str | None = None, **kwargs) -> None:
        if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
            raise ValueError(f"Expected class_index as an int >= 0. Received: class_index={class_index!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"Expected threshold in (0, 1). Received: threshold={threshold!r}")
        super().__init__(name=name or f"dice_{class_index}", **kwargs)
        self.class_index = class_index
        self.threshold = float(threshold)
        # float64 accumulators: whole validation volumes exceed float32's exact integer range.
        self.intersection = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="intersection")
        self.predicted = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="predicted")
        self.target = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="target")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if sample_weight is not None:
            raise ValueError(f"Expected sample_weight=None: {type(self).__name__} counts voxels unweighted.")
        predicted, target = self._masks(y_true, y_pred)
        self.intersection.assign_add(_count(predicted & target))
        self.predicted.assign_add(_count(predicted))
        self.target.assign_add(_count(target))

    def result(self):
        total = self.predicted + self.target
        score = ops.where(total > 0, 2.0 * self.intersection / ops.maximum(total, 1.0), 1.0)
        return ops.cast(score, "float32")

    def _masks(self, y_true, y_pred):
        channels = y_pred.shape[-1]
        if channels is None or self.class_index >= max(channels, 1) or (channels == 1 and self.class_index != 0):
            raise ValueError(
                f"Expected class_index < the {channels} output channel(s) (0 for a one-channel sigmoid output). "
                f"Received: class_index={self.class_index}"
            )
        if channels == 1:
            return y_pred[..., 0] > self.threshold, ops.reshape(y_true, ops.shape(y_pred)[:-1]) > 0.5
        predicted = ops.argmax(y_pred, axis=-1) == self.class_index
        if len(y_true.shape) == len(y_pred.shape) - 1 or y_true.shape[-1] == 1:
            labels = ops.reshape(y_true, ops.shape(predicted))
            target = ops.cast(labels, "int32") == self.class_index
        else:
            target = ops.argmax(y_true, axis=-1) == self.class_index
        return predicted, target

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(class_index=self.class_index, threshold=self.threshold)
        return config


def _count(mask):
    return ops.cast(ops.sum(ops.cast(mask, "int32")), "float64")
