"""The one public factory of both families: the shared U-Net backbone plus a softmax or sigmoid head.

* ``"multiclass"``: one network, 1x1 convolution to ``num_classes`` channels + softmax.
* ``"single_class"``: one network per class (the ensemble), 1x1 convolution to 1 channel + sigmoid.

Also the matching `compile_segmenter` and an analytic cost count, `count_flops`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from brainseg_tf.config import ModelConfig
from brainseg_tf.families import FAMILIES, Family
from brainseg_tf.models.losses import DiceBinaryCrossEntropy, DiceCrossEntropy
from brainseg_tf.models.metrics import DiceScore
from brainseg_tf.labels import class_slug
from brainseg_tf.models.unet import build_backbone


_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def build_segmenter(
    family: Family,
    input_shape: Sequence[int | None],
    num_classes: int,
    config: ModelConfig | None = None,
    *,
    name: str | None = None,
) -> keras.Model:
    """A segmentation network of either family on the shared backbone.

    Args:
        family: ``"multiclass"`` (softmax head) or ``"single_class"`` (sigmoid head).
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``; spatial sizes ``None`` or multiples of ``2**depth``.
        num_classes: classes of the label set, background included (>= 2). The softmax head outputs
            that many channels; the sigmoid head always outputs one (the ensemble builds one network
            per foreground class), so there it is only checked. Same call for both families.
        config: backbone settings.
        name: model name; ``"<family>_unet"`` by default.

    Returns:
        A functional `keras.Model` whose output is float32 probabilities ``(N, ..., channels)``,
        whatever the global dtype policy (mixed precision included).

    Raises:
        ValueError: unknown family, ``num_classes < 2`` or a bad input shape.
    """
    if family not in FAMILIES:
        raise ValueError(f"Expected family in {list(FAMILIES)}. Received: family={family!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"Expected num_classes as an int >= 2 (background included). Received: num_classes={num_classes!r}")
    backbone = build_backbone(input_shape, config)
    outputs = segmentation_head(backbone.output, family, int(num_classes))
    return keras.Model(backbone.input, outputs, name=name or f"{family}_unet")


def segmentation_head(features, family: Family, num_classes: int):
    """1x1(x1) convolution to the family's channels, then softmax or sigmoid computed in float32."""
    rank = len(features.shape) - 2
    conv = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    if family == "multiclass":
        logits = conv(num_classes, 1, name="head_conv")(features)
        return keras.layers.Softmax(axis=-1, dtype="float32", name="head_softmax")(logits)
    logits = conv(1, 1, name="head_conv")(features)
    return keras.layers.Activation("sigmoid", dtype="float32", name="head_sigmoid")(logits)


def compile_segmenter(
    model: keras.Model,
    family: Family,
    config: ModelConfig | None = None,
    learning_rate: float = 1e-3,
    class_names: Sequence[str] | None = None,
) -> keras.Model:
    """Attach Adam, the family's loss and per-class Dice metrics named by `dice_metric_name`.

    Args:
        model: a network from `build_segmenter`.
        family: the model's family; must match its output channels.
        config: loss weights (``dice_weight``, ``crossentropy_weight``, ``positive_weight``).
        learning_rate: Adam's learning rate.
        class_names: multiclass: every class name, background first (Dice is reported for the
            foreground ones); single_class: one name, the network's class. Defaults to indices.

    Returns:
        The same model, compiled.

    Raises:
        ValueError: family and output channels disagree, or class_names has the wrong length.
    """
    config = config or ModelConfig()
    if family not in FAMILIES:
        raise ValueError(f"Expected family in {list(FAMILIES)}. Received: family={family!r}")
    channels = model.output.shape[-1]
    if (channels == 1) != (family == "single_class"):
        expected = "1 output channel" if family == "single_class" else "more than 1 output channel"
        raise ValueError(f"Expected a model with {expected} for family={family!r}. Received: {channels} channel(s)")
    scored = list(range(1, channels)) if family == "multiclass" else [0]
    default_names = [str(c) for c in range(channels)] if family == "multiclass" else ["foreground"]
    names = list(class_names) if class_names is not None else default_names
    if len(names) != len(default_names):
        raise ValueError(f"Expected {len(default_names)} class_names for family={family!r}. Received: class_names={names!r}")
    metrics = [DiceScore(c, name=dice_metric_name(names[c])) for c in scored]
    if family == "multiclass":
        loss = DiceCrossEntropy(config.dice_weight, config.crossentropy_weight)
    else:
        loss = DiceBinaryCrossEntropy(config.dice_weight, config.crossentropy_weight, config.positive_weight)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    return model


def dice_metric_name(class_name: str) -> str:
    """``dice_<class name>`` in lower case, other characters as underscores: "gray matter" -> "dice_gray_matter"."""
    return "dice_" + class_slug(class_name)


def count_flops(model: keras.Model, input_shape: Sequence[int] | None = None) -> int:
    """Floating-point operations of one forward pass of one sample: ``2 * multiply-adds``.

    Counts the multiply-adds of convolutions (plain and transposed, 2D and 3D) analytically from
    kernel sizes, channels and output sizes; normalisation, activations, pooling, concatenation and
    biases are left out (a few percent at most).

    Args:
        model: a functional model, e.g. from `build_segmenter`.
        input_shape: static input shape without the batch axis; the model's own when None. Lets a
            fully convolutional model be costed at any size.

    Raises:
        ValueError: the input shape has unknown sizes.
    """
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input.shape[1:])
    if any(s is None for s in shape):
        raise ValueError(f"Expected a static input_shape to count FLOPs. Received: input_shape={shape}")
    inputs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    if len(inputs) != 1:
        raise ValueError(f"Expected a model with one input. Received: inputs={inputs}")
    config = model.get_config()
    for layer_config in config["layers"]:
        if layer_config["name"] == inputs[0]:
            layer_config["config"]["batch_shape"] = (1, *shape)
    clone = keras.Model.from_config(config)  # same architecture with static sizes; weights are not needed
    macs = 0
    for layer in clone.layers:
        if isinstance(layer, _CONVOLUTIONS):
            macs += _conv_macs(layer)
    return 2 * macs


def _conv_macs(layer) -> int:
    kernel = int(np.prod(layer.kernel_size))
    in_channels = int(layer.input.shape[-1])
    out_channels = int(layer.filters)
    if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
        positions = int(np.prod(layer.input.shape[1:-1]))  # each input voxel scatters a kernel
    else:
        positions = int(np.prod(layer.output.shape[1:-1]))
    return positions * kernel * in_channels * out_channels // int(getattr(layer, "groups", 1))
