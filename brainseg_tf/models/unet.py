"""The U-Net encoder-decoder backbone shared by both model families (2D/2.5D slices or 3D patches).

Inputs are channels-last: ``(H, W, C)`` for 2.5D slices (the slice and its context stacked as
channels) or ``(D, H, W, 1)`` for 3D patches; the input rank picks Conv2D or Conv3D. Spatial sizes
may be ``None`` (fully convolutional) so whole slices can be segmented once padded to a multiple of
``2**depth`` (see `padded_shape`).

Layer names follow one pattern, level by level: ``enc{level}_conv{i}`` / ``_bn{i}`` / ``_relu{i}``
/ ``_pool`` in the encoder, ``bottleneck_*`` at the lowest level, ``dec{level}_up`` / ``_concat`` /
``_conv{i}`` ... in the decoder; level 0 has full resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from brainseg_tf.config import ModelConfig
from brainseg_tf.errors import ConfigError


_LAYERS = {
    2: {"conv": keras.layers.Conv2D, "transpose": keras.layers.Conv2DTranspose,
        "pool": keras.layers.MaxPooling2D, "upsample": keras.layers.UpSampling2D},
    3: {"conv": keras.layers.Conv3D, "transpose": keras.layers.Conv3DTranspose,
        "pool": keras.layers.MaxPooling3D, "upsample": keras.layers.UpSampling3D},
}


def build_backbone(
    input_shape: Sequence[int | None],
    config: ModelConfig | None = None,
    *,
    name: str = "unet",
) -> keras.Model:
    """A U-Net whose output is the full-resolution feature map (``config.base_filters`` channels).

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)`` without the batch axis; spatial sizes may be
            ``None``, given ones must be multiples of ``2**config.depth``; channels must be given.
        config: depth, filters, convolutions per level, normalisation, upsampling and bottleneck dropout.
        name: name of the returned model.

    Returns:
        A functional `keras.Model` mapping the input to the decoder's last feature map.

    Raises:
        ValueError: an input shape of the wrong rank, without channels or not divisible.
        ConfigError: a config value outside what the backbone accepts.
    """
    config = config or ModelConfig()
    check_model_config(config)
    input_shape = check_input_shape(input_shape, config.depth)
    layers = _LAYERS[len(input_shape) - 1]

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(config.depth):
        x = conv_block(x, _filters(config, level), config, layers, prefix=f"enc{level}")
        skips.append(x)
        x = layers["pool"](pool_size=2, name=f"enc{level}_pool")(x)
    x = conv_block(x, _filters(config, config.depth), config, layers, prefix="bottleneck")
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(config.depth)):
        x = up_block(x, skips[level], _filters(config, level), config, layers, prefix=f"dec{level}")
    return keras.Model(inputs, x, name=name)


def conv_block(x, filters: int, config: ModelConfig, layers: dict, prefix: str):
    """``config.convs_per_level`` times: 3x3(x3) convolution, optional batch norm, ReLU."""
    use_norm = config.normalization == "batch"
    for i in range(1, config.convs_per_level + 1):
        x = layers["conv"](
            filters, 3, padding="same", use_bias=not use_norm, kernel_initializer="he_normal", name=f"{prefix}_conv{i}"
        )(x)
        if use_norm:
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu{i}")(x)
    return x


def up_block(x, skip, filters: int, config: ModelConfig, layers: dict, prefix: str):
    """Double the resolution, concatenate the encoder's skip connection, then a `conv_block`."""
    if config.upsampling == "transpose":
        x = layers["transpose"](filters, 2, strides=2, kernel_initializer="he_normal", name=f"{prefix}_up")(x)
    else:
        x = layers["upsample"](size=2, name=f"{prefix}_upsample")(x)
        x = layers["conv"](filters, 3, padding="same", kernel_initializer="he_normal", name=f"{prefix}_up")(x)
    x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_concat")([x, skip])
    return conv_block(x, filters, config, layers, prefix=prefix)


def check_input_shape(input_shape: Sequence[int | None], depth: int) -> tuple[int | None, ...]:
    """The input shape as a tuple, checked for rank, channels and divisibility by ``2**depth``.

    Raises:
        ValueError: naming the offending shape and what was expected.
    """
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except (TypeError, ValueError):
        message = f"Expected input_shape as a sequence of ints or None. Received: input_shape={input_shape!r}"
        raise ValueError(message) from None
    if len(shape) not in (3, 4):
        raise ValueError(
            "Expected input_shape (H, W, C) for slices or (D, H, W, C) for patches, without the batch axis. "
            f"Received: input_shape={input_shape!r}"
        )
    if shape[-1] is None or shape[-1] < 1:
        raise ValueError(f"Expected a positive channel count last in input_shape. Received: input_shape={input_shape!r}")
    multiple = 2**depth
    bad = [s for s in shape[:-1] if s is not None and (s < multiple or s % multiple)]
    if bad:
        raise ValueError(
            f"Expected every spatial size in input_shape to be a positive multiple of 2**depth={multiple} "
            f"(pad inputs with padded_shape). Received: input_shape={input_shape!r} with depth={depth}"
        )
    return shape


def check_model_config(config: ModelConfig) -> None:
    """Raise `ConfigError` for backbone settings that cannot build a network."""
    for key in ("base_filters", "depth", "convs_per_level"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"Expected model.{key} as an int >= 1. Received: {key}={value!r}")
    if config.normalization not in ("batch", "none"):
        raise ConfigError(f"Expected model.normalization in ['batch', 'none']. Received: normalization={config.normalization!r}")
    if config.upsampling not in ("transpose", "resize"):
        raise ConfigError(f"Expected model.upsampling in ['transpose', 'resize']. Received: upsampling={config.upsampling!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"Expected model.dropout in [0, 1). Received: dropout={config.dropout!r}")


def padded_shape(spatial_shape: Sequence[int], depth: int) -> tuple[int, ...]:
    """Each size rounded up to the next multiple of ``2**depth``, e.g. (197, 233) -> (208, 240) at depth 4."""
    multiple = 2**depth
    return tuple(int(math.ceil(s / multiple) * multiple) for s in spatial_shape)


def _filters(config: ModelConfig, level: int) -> int:
    return config.base_filters * 2**level
