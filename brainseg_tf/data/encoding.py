"""Target encoding: the one place where the two model families differ in what the generator yields.

``softmax`` targets are one-hot over all classes, (..., num_classes); ``sigmoid(k)`` targets are
the binary mask of class k, (..., 1). Both are float32 and computed from the same class map, so
for identical samples ``sigmoid(k)`` targets equal ``softmax`` targets[..., k:k+1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import tensorflow as tf

from brainseg_tf.errors import ConfigError

EncodingKind = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class TargetEncoding:
    """How class maps become training targets.

    Attributes:
        kind: ``softmax`` (one-hot over all classes) or ``sigmoid`` (one foreground class).
        class_index: the class of a sigmoid target (>= 1, background has no sigmoid network); None for softmax.

    Raises:
        ConfigError: unknown kind, or a class index that does not fit the kind.
    """

    kind: EncodingKind
    class_index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("softmax", "sigmoid"):
            raise ConfigError(f"Expected encoding kind in ['softmax', 'sigmoid']. Received: kind={self.kind!r}")
        if self.kind == "softmax" and self.class_index is not None:
            raise ConfigError(f"Expected no class_index for a softmax encoding. Received: class_index={self.class_index!r}")
        if self.kind == "sigmoid":
            index = self.class_index
            if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 1:
                raise ConfigError(
                    "Expected a foreground class_index >= 1 for a sigmoid encoding (class 0 is background). "
                    f"Received: class_index={index!r}"
                )

    @classmethod
    def softmax(cls) -> TargetEncoding:
        """One-hot targets over every class."""
        return cls("softmax")

    @classmethod
    def sigmoid(cls, class_index: int) -> TargetEncoding:
        """Binary targets of one foreground class."""
        return cls("sigmoid", class_index)

    @property
    def name(self) -> str:
        """``softmax`` or ``sigmoid-<k>``: handy in file and model names."""
        return self.kind if self.kind == "softmax" else f"sigmoid-{self.class_index}"

    def check(self, num_classes: int) -> None:
        """Check the encoding against a label set's number of classes.

        Raises:
            ConfigError: the sigmoid class index is not a class of the label set.
        """
        if self.kind == "sigmoid" and self.class_index >= num_classes:  # type: ignore[operator]
            raise ConfigError(
                f"Expected a sigmoid class_index in [1, {num_classes - 1}] for {num_classes} classes. "
                f"Received: class_index={self.class_index}"
            )

    def channels(self, num_classes: int) -> int:
        """Target channels: `num_classes` for softmax, 1 for sigmoid."""
        self.check(num_classes)
        return num_classes if self.kind == "softmax" else 1

    def encode(self, classes: tf.Tensor | np.ndarray, num_classes: int) -> tf.Tensor:
        """Encode an integer class map of any shape (...) as float32 targets (..., channels).

        Args:
            classes: class indices (uint8, int32 or int64).
            num_classes: classes of the label set, background included.

        Raises:
            ConfigError: the encoding does not fit `num_classes`.
        """
        self.check(num_classes)
        classes = tf.convert_to_tensor(classes)
        if self.kind == "softmax":
            return tf.one_hot(tf.cast(classes, tf.int32), num_classes, dtype=tf.float32)
        mask = tf.equal(tf.cast(classes, tf.int32), self.class_index)
        return tf.cast(mask, tf.float32)[..., tf.newaxis]
