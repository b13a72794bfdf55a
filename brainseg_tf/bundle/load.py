"""Loading a verified model bundle: as a Keras model, or as a keras-free TensorFlow serving function.

`load_serving_function` imports only TensorFlow and numpy, so it runs where Keras 3 is missing
(the ppc64le image ships TensorFlow 2.14 alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_tf.bundle.spec import KERAS_FILE, LABELS_OUTPUT, LABELS_SIGNATURE, OUTPUT_NAME, SAVED_MODEL_DIR, SIGNATURE
from brainseg_tf.bundle.verify import BundleInfo, verify_bundle
from brainseg_tf.errors import BundleError
from brainseg_tf.preprocessing import InputSpec


def load_keras_model(path: str | os.PathLike[str]):
    """Verify a model bundle, then load its ``model.keras`` with ``safe_mode=True``.

    The file holds architecture and weights, no optimizer or compile state: compile the model with
    `brainseg_tf.models.compile_segmenter` (loss weights are in the bundle's config) to train it further.

    Args:
        path: a bundle of kind ``model``.

    Returns:
        The `keras.Model`.

    Raises:
        BundleError: the bundle fails verification, is an ensemble, or Keras cannot read the file.
    """
    root = Path(path)
    _require_model(root, verify_bundle(root)["kind"])
    import keras

    import brainseg_tf.models  # noqa: F401  (registers the package's custom objects)

    try:
        return keras.saving.load_model(root / KERAS_FILE, safe_mode=True)
    except (ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())[:300]
        raise BundleError(root / KERAS_FILE, f"keras {keras.__version__} cannot load it ({message})") from error


class ServingFunction:
    """A bundle's SavedModel signature as a numpy function: float32 batch -> probabilities.

    Attributes:
        path: the bundle folder.
        pad_multiple: spatial sizes of a batch must be multiples of this (from the bundle's input contract).
        input_shape: the signature's input shape, ``(None, ..., channels)``.
    """

    def __init__(self, path: Path, loaded: Any, pad_multiple: int) -> None:
        if SIGNATURE not in loaded.signatures:
            raise BundleError(path / SAVED_MODEL_DIR, f"no {SIGNATURE!r} signature. Found: {sorted(loaded.signatures)}")
        self.path = path
        self.pad_multiple = pad_multiple
        self._loaded = loaded  # keeps the restored variables alive as long as the function
        self._signature = loaded.signatures[SIGNATURE]
        _, inputs = self._signature.structured_input_signature
        if len(inputs) != 1 or OUTPUT_NAME not in self._signature.structured_outputs:
            raise BundleError(path / SAVED_MODEL_DIR, f"expected one input and an output {OUTPUT_NAME!r} in {SIGNATURE!r}")
        ((self._input_name, spec),) = inputs.items()
        self.input_shape: tuple[int | None, ...] = tuple(spec.shape.as_list())
        self._labels = self._labels_function(loaded, spec)  # spec: the signature's input TensorSpec

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, ..., channels_out)`` float32 for a batch ``(N, ..., channels_in)``.

        Raises:
            ValueError: wrong rank or channels, or spatial sizes not multiples of ``pad_multiple``.
        """
        import tensorflow as tf

        batch = np.asarray(batch, dtype=np.float32)
        self._check(batch.shape)
        outputs = self._signature(**{self._input_name: tf.constant(batch)})
        return outputs[OUTPUT_NAME].numpy()

    def labels(self, batch: np.ndarray) -> np.ndarray:
        """Class indices ``(N, ...)`` uint8: the class of highest probability, found inside TensorFlow.

        From the bundle's ``labels`` signature (the argmax of the logits, no softmax computed) when
        it has one; otherwise the argmax of ``serving_default``'s probabilities, in a TensorFlow
        function (on an exact tie the lowest index, as `numpy.argmax`: seen on CPU, not promised by
        TensorFlow's documentation). Either way no float per class and voxel is copied out
        (docs/benchmarks.md). Meant for multi-class (softmax) networks.

        Raises:
            ValueError: as `__call__`.
        """
        import tensorflow as tf

        batch = np.asarray(batch, dtype=np.float32)
        self._check(batch.shape)
        return self._labels(tf.constant(batch)).numpy()

    def _labels_function(self, loaded: Any, batch_spec: Any) -> Any:
        """The labels signature as ``batch -> uint8 tensor`` when the SavedModel has it, else `_argmax_function`."""
        if LABELS_SIGNATURE not in loaded.signatures:
            return _argmax_function(self._signature, self._input_name, batch_spec)
        signature = loaded.signatures[LABELS_SIGNATURE]
        _, inputs = signature.structured_input_signature
        if list(inputs) != [self._input_name] or list(signature.structured_outputs) != [LABELS_OUTPUT]:
            raise BundleError(self.path / SAVED_MODEL_DIR, f"expected input {self._input_name!r} and output {LABELS_OUTPUT!r} in {LABELS_SIGNATURE!r}")
        return lambda batch: signature(**{self._input_name: batch})[LABELS_OUTPUT]

    def _check(self, shape: tuple[int, ...]) -> None:
        expected = self.input_shape
        if len(shape) != len(expected) or shape[-1] != expected[-1]:
            raise ValueError(f"Expected a batch of shape {expected} for {self.path}. Received: shape={shape}")
        multiple = self.pad_multiple
        if any(size % multiple for size in shape[1:-1]):
            raise ValueError(
                f"Expected spatial sizes that are multiples of pad_multiple={multiple} for {self.path} "
                f"(pad with brainseg_tf.models.padded_shape). Received: shape={shape}"
            )


def _argmax_function(signature: Any, input_name: str, batch_spec: Any) -> Any:
    """A TensorFlow function ``batch -> uint8 argmax over the channels of signature(batch)[OUTPUT_NAME]``,
    traced once for every batch shape the signature accepts (``batch_spec``, its input `tf.TensorSpec`)."""
    import tensorflow as tf

    def argmax(batch: Any) -> Any:
        probabilities = signature(**{input_name: batch})[OUTPUT_NAME]
        return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)

    return tf.function(argmax, input_signature=[tf.TensorSpec(batch_spec.shape, tf.float32)])


def load_serving_function(bundle: str | os.PathLike[str] | BundleInfo) -> ServingFunction:
    """Load a model bundle's SavedModel with TensorFlow alone (no Keras import), after verification.

    Args:
        bundle: a bundle folder of kind ``model``, verified here; or its `BundleInfo` from
            `read_bundle_info`, which verified it already (an ensemble's members are verified with
            the ensemble: each file is hashed once per load).

    Returns:
        A `ServingFunction`: call it with a float32 batch ``(N, H, W, C)`` (or ``(N, D, H, W, C)``)
        to get the probabilities as a numpy array.

    Raises:
        BundleError: the bundle fails verification, is an ensemble, or its SavedModel lacks the signature.
    """
    if isinstance(bundle, BundleInfo):
        root, kind, pad_multiple = bundle.path, bundle.kind, bundle.input_spec.pad_multiple
    else:
        root = Path(bundle)
        data = verify_bundle(root)
        kind, pad_multiple = data["kind"], InputSpec.from_dict(data["input_spec"]).pad_multiple
    _require_model(root, kind)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(root / SAVED_MODEL_DIR))
    return ServingFunction(root, loaded, pad_multiple)


def _require_model(root: Path, kind: str) -> None:
    if kind != "model":
        raise BundleError(root, f"expected a bundle of kind 'model'. Received: kind={kind!r} (load its members one by one)")
