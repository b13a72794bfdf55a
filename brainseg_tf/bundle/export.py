"""The two files of a model bundle that hold the network: an inference copy in Keras, and its SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainseg_tf.bundle.spec import INPUT_NAME, LABELS_OUTPUT, LABELS_SIGNATURE, OUTPUT_NAME, SAVED_MODEL_DIR, SIGNATURE
from brainseg_tf.errors import BundleError

SERVING_ATOL = 1e-4
"""Largest difference allowed between the Keras model and its SavedModel on the write-time probe."""


def export_saved_model(model, directory: Path) -> None:
    """Export ``model`` as a TensorFlow SavedModel with keras-free signatures.

    ``serving_default`` takes ``image``: float32 ``(None, ..., channels)`` with every spatial size
    unknown, and returns ``{"probabilities": float32}``. A softmax network has a second signature,
    ``labels``: the same input, ``{"labels": uint8 (None, ...)}``, the class of highest probability
    taken from the logits (no softmax computed). Written with TensorFlow's own
    `tf.saved_model.save` around the traced function and the variables it captures: Keras'
    ``ExportArchive`` with ``track(model)`` stores every weight twice (the Keras variables and the
    TensorFlow variables the endpoint captured), doubling the folder's size.

    The served function is ``model`` rewritten for inference (`brainseg_tf.models.serving`: batch
    norms folded into the convolutions before them, a softmax head in a faster form): the same
    probabilities to float32 rounding; `check_serving_matches` compares it with the Keras model.
    """
    import tensorflow as tf

    from brainseg_tf.models.serving import serving_functions

    served, labelled = serving_functions(model)
    rank = len(model.inputs[0].shape)
    spec = tf.TensorSpec((None,) * (rank - 1) + (model.inputs[0].shape[-1],), tf.float32, name=INPUT_NAME)

    signatures = {SIGNATURE: lambda image: {OUTPUT_NAME: tf.cast(served(image), tf.float32)}}
    if labelled is not None:
        signatures[LABELS_SIGNATURE] = lambda image: {LABELS_OUTPUT: labelled(image)}
    module = tf.Module(name="brainseg_serving")
    concrete = {}
    for name, function in signatures.items():
        traced = tf.function(function, input_signature=[spec], autograph=False)
        setattr(module, name, traced)
        concrete[name] = traced.get_concrete_function()
    variables = {id(v): v for c in concrete.values() for v in c.variables}  # the signatures share one folded model
    module.weights = list(variables.values())  # what the signatures read, tracked so the SavedModel restores it
    tf.saved_model.save(module, str(directory), signatures=concrete)


def inference_copy(target: Path, model):
    """The same network and weights with unknown spatial sizes and no optimizer or compile state."""
    import keras

    import brainseg_tf.models  # noqa: F401  (registers the package's custom objects)

    config = model.get_config()
    input_names = {layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)}
    for layer_config in config["layers"]:
        if layer_config["name"] in input_names:
            shape = layer_config["config"]["batch_shape"]
            layer_config["config"]["batch_shape"] = (None,) * (len(shape) - 1) + (shape[-1],)
    try:
        copy = keras.Model.from_config(config)
    except (ValueError, TypeError) as error:
        problem = f"the model cannot be rebuilt with unknown spatial sizes (is it fully convolutional?): {error}"
        raise BundleError(target, problem) from None
    copy.set_weights(model.get_weights())
    return copy


def check_serving_matches(staging: Path, model, pad_multiple: int) -> None:
    """Run a seeded probe (spatial sizes multiples of ``pad_multiple``) through the Keras model and the
    reloaded SavedModel; they must agree."""
    import tensorflow as tf

    multiple = pad_multiple
    spatial = (multiple, 2 * multiple) if len(model.inputs[0].shape) == 4 else (multiple,) * 3
    probe = np.random.default_rng(0).random((1, *spatial, model.inputs[0].shape[-1]), dtype=np.float32)
    expected = np.asarray(model(probe, training=False))
    loaded = tf.saved_model.load(str(staging / SAVED_MODEL_DIR))
    found = loaded.signatures[SIGNATURE](**{INPUT_NAME: tf.constant(probe)})[OUTPUT_NAME].numpy()
    difference = float(np.max(np.abs(found - expected)))
    if found.shape != expected.shape or not difference <= SERVING_ATOL:
        problem = f"disagrees with the Keras model on a probe (shape {found.shape} vs {expected.shape}, max difference {difference:g})"
        raise BundleError(staging / SAVED_MODEL_DIR, problem)
    if LABELS_SIGNATURE in loaded.signatures:
        labels = loaded.signatures[LABELS_SIGNATURE](**{INPUT_NAME: tf.constant(probe)})[LABELS_OUTPUT].numpy()
        _check_labels(staging, labels, expected)


def _check_labels(staging: Path, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """The labels signature picks, at every voxel of the probe, a class of highest probability (to `SERVING_ATOL`)."""
    if labels.dtype != np.uint8 or labels.shape != probabilities.shape[:-1]:
        problem = f"labels signature gives {labels.dtype} {labels.shape}, expected uint8 {probabilities.shape[:-1]}"
        raise BundleError(staging / SAVED_MODEL_DIR, problem)
    chosen = np.take_along_axis(probabilities, labels[..., None].astype(np.intp), axis=-1)[..., 0]
    shortfall = float(np.max(probabilities.max(axis=-1) - chosen))
    if not shortfall <= SERVING_ATOL:
        problem = f"labels signature disagrees with the Keras model on a probe (a chosen class is {shortfall:g} below the highest probability)"
        raise BundleError(staging / SAVED_MODEL_DIR, problem)
