"""The network a bundle serves: the trained model rewritten for inference, the same function.

Two rewrites, each exact up to float32 rounding (`brainseg_tf.bundle.export.check_serving_matches`
compares the result with the trained Keras model):

* batch norms folded into the convolutions before them (`brainseg_tf.models.fold`);
* a softmax head over the channels computed as elementwise maxima of the channels, one ``exp``,
  and the sum of the channels as a 1x1(x1) convolution with a kernel of ones (`channel_softmax`).
  TensorFlow's oneDNN softmax over a handful of channels took about 35 ms of a 280 ms batch
  (176x208 slices, 28 of them) on 2 AVX2 cores; this form cuts a network call by about 12 %
  (docs/benchmarks.md).

For a softmax head there is a second function, the labels: the argmax over the channels of the
logits, as uint8. Softmax is increasing in each logit, so this is the class of highest probability,
found without computing the softmax (`serving_functions`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras

from brainseg_tf.models.fold import fold_batch_norm


def serving_network(model: keras.Model) -> Callable:
    """A callable ``images -> outputs`` equal to ``model`` in inference, rewritten to run faster.

    Args:
        model: a functional `keras.Model` (e.g. from `brainseg_tf.models.build_segmenter`).

    Returns:
        The folded model, followed by `channel_softmax` in place of its final softmax when its
        output is a ``Softmax(axis=-1)`` layer; the folded model alone otherwise.
    """
    return serving_functions(model)[0]


def serving_functions(model: keras.Model) -> tuple[Callable, Callable | None]:
    """The outputs function of `serving_network` and, for a softmax head, the labels function.

    Args:
        model: a functional `keras.Model`.

    Returns:
        ``(images -> outputs, images -> labels)``, both on one folded copy of the model (they share
        its variables). The labels are uint8 class indices ``(N, ...)``: the argmax over the
        channels of the logits, the input of the final ``Softmax(axis=-1)``; None when the output is
        not such a layer.
    """
    folded = fold_batch_norm(model)
    head = folded.layers[-1]
    if not (isinstance(head, keras.layers.Softmax) and head.axis in (-1, [-1], (-1,)) and len(folded.outputs) == 1):
        return (lambda images: folded(images, training=False)), None
    import tensorflow as tf

    logits = keras.Model(folded.inputs, head.input, name=f"{folded.name}_logits")

    def outputs(images):
        return channel_softmax(tf.cast(logits(images, training=False), tf.float32))  # as the head: in float32

    def labels(images):
        return tf.cast(tf.argmax(logits(images, training=False), axis=-1), tf.uint8)

    return outputs, labels


def channel_softmax(logits):
    """Softmax over the last (channel) axis of ``(N, ..., K)`` float logits, for 1, 2 or 3 spatial axes.

    ``exp(x - max) / sum(exp(x - max))`` with the maximum taken as elementwise maxima of the K
    channels and the sum as a convolution with a ``(1, ..., K, K)`` kernel of ones, which repeats
    each voxel's sum over its K channels.
    """
    import tensorflow as tf

    channels = int(logits.shape[-1])
    highest = functools.reduce(tf.maximum, [logits[..., k : k + 1] for k in range(channels)])
    exponentials = tf.exp(logits - highest)
    ones = tf.ones((1,) * (len(logits.shape) - 2) + (channels, channels), dtype=exponentials.dtype)
    return exponentials / tf.nn.convolution(exponentials, ones, padding="VALID")
