"""Batch normalisation folded into the convolution before it: the same inference function, fewer ops.

In inference a `BatchNormalization` layer is a per-channel affine map,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``. When ``x`` is the output of a convolution
(kernel ``W``, bias ``b`` or none) that feeds nothing else, the pair equals one convolution with
kernel ``W * s`` and bias ``(b - mean) * s + beta``, where ``s = gamma / sqrt(var + eps)`` scales
the output channels. The folded network computes the same probabilities (to float32 rounding) with
one pass over each feature map instead of three: what the SavedModel of a bundle serves
(`brainseg_tf.bundle.export`); the ``.keras`` file keeps the trainable layers.
"""

from __future__ import annotations

import keras
import numpy as np

_CONVOLUTIONS = ("Conv1D", "Conv2D", "Conv3D")


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of a functional ``model`` in which every foldable `BatchNormalization` is merged away.

    A batch norm is folded when its input is a plain convolution (``Conv1D/2D/3D``, linear
    activation, channels last) used by that batch norm alone, and it normalises the last axis.
    Such a convolution gets a bias and the batch norm becomes an ``Identity`` layer; every other
    layer keeps its config and weights. Models without such pairs come back as an equal copy.

    Args:
        model: a functional `keras.Model` (e.g. from `brainseg_tf.models.build_segmenter`).

    Returns:
        A new functional model for inference (its batch norms no longer learn).
    """
    config = model.get_config()
    layers = {entry["name"]: entry for entry in config["layers"]}
    pairs = _foldable_pairs(config["layers"], layers)
    for conv_name, norm_name in pairs.items():
        layers[conv_name]["config"]["use_bias"] = True
        norm = layers[norm_name]
        norm.update(module="keras.layers", class_name="Identity", registered_name=None)
        norm["config"] = {"name": norm_name, "trainable": False, "dtype": norm["config"]["dtype"]}
        for node in norm["inbound_nodes"]:
            node["kwargs"] = {}  # a batch norm's call takes `mask`; Identity takes the tensor alone
    folded = keras.Model.from_config(config)
    folded_norms = set(pairs.values())
    for layer in folded.layers:
        if layer.name in pairs:
            layer.set_weights(_folded_weights(model.get_layer(layer.name), model.get_layer(pairs[layer.name])))
        elif layer.name not in folded_norms and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return folded


def _foldable_pairs(entries: list[dict], layers: dict[str, dict]) -> dict[str, str]:
    """Convolution name -> the batch norm folded into it."""
    consumers: dict[str, int] = {}
    for entry in entries:
        for source in _inbound_layer_names(entry):
            consumers[source] = consumers.get(source, 0) + 1
    pairs = {}
    for entry in entries:
        if entry["class_name"] != "BatchNormalization" or entry["config"].get("axis") not in (-1, [-1]):
            continue
        sources = _inbound_layer_names(entry)
        if len(entry["inbound_nodes"]) != 1 or len(sources) != 1:
            continue
        conv = layers[sources[0]]
        settings = conv["config"]
        if (
            conv["class_name"] in _CONVOLUTIONS
            and consumers[sources[0]] == 1
            and settings.get("activation") == "linear"
            and settings.get("data_format", "channels_last") == "channels_last"
        ):
            pairs[conv["name"]] = entry["name"]
    return pairs


def _inbound_layer_names(entry: dict) -> list[str]:
    """Names of the layers whose outputs an entry of a functional config consumes."""
    names: list[str] = []

    def visit(value) -> None:
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
            if history:
                names.append(history[0])
            else:
                for item in value.values():
                    visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    for node in entry["inbound_nodes"]:
        visit(node)
    return names


def _folded_weights(conv: keras.layers.Layer, norm: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """[kernel, bias] of the convolution that does what ``conv`` then ``norm`` (inference) do."""
    kernel = np.asarray(conv.kernel, dtype=np.float64)
    bias = np.asarray(conv.bias, dtype=np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
    channels = kernel.shape[-1]
    gamma = np.asarray(norm.gamma, dtype=np.float64) if norm.scale else np.ones(channels)
    beta = np.asarray(norm.beta, dtype=np.float64) if norm.center else np.zeros(channels)
    mean = np.asarray(norm.moving_mean, dtype=np.float64)
    variance = np.asarray(norm.moving_variance, dtype=np.float64)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    return [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
