"""Workarounds that let Keras 3 ``Model.fit`` run under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3 (3.15 checked) fails twice when a model built under a multi-worker strategy is fitted
(upstream: keras-team/keras#20585, tensorflow/tensorflow#72388):

1. before the first step, ``TensorFlowTrainer._maybe_symbolic_build`` averages the first data batch
   across replicas with ``strategy.reduce``, which a multi-worker strategy refuses for a nested batch;
   the batch only serves to learn shapes and dtypes, so this process's first local replica serves as well;
2. each train and test step reduces its scalar logs with ``strategy.reduce("MEAN", v, axis=0)``, which
   fails on scalars; step logs are taken from the local replica instead ("first").

Epoch logs (what callbacks, the CSV log, checkpoints and early stopping see) are unaffected by (2):
Keras reads them from the metric variables, which are summed over every replica of every worker,
so all workers see the same values and take the same decisions.

`install` patches the Keras trainer module of this process; it is called only for multi-worker runs.
"""

from __future__ import annotations

import logging

import tensorflow as tf

logger = logging.getLogger(__name__)

_installed = False


def install() -> None:
    """Patch Keras's TensorFlow trainer for multi-worker runs (idempotent).

    Raises:
        RuntimeError: this Keras version lacks the patched functions (the workaround needs review).
    """
    global _installed
    if _installed:
        return
    from keras.src.backend.tensorflow import trainer

    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker")
    if not all(hasattr(trainer, name) for name in needed) or not hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build"):
        raise RuntimeError("keras.src.backend.tensorflow.trainer changed: review training/keras_multiworker.py for this Keras version")
    original_reduce = trainer.reduce_per_replica
    is_multiworker = trainer._collective_all_reduce_multi_worker  # noqa: SLF001  (Keras's own test for the failing case)
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction == "auto" and is_multiworker(strategy):
            reduction = "first"
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not is_multiworker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(lambda value: _local_value(strategy, value), next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _installed = True
    logger.debug("Keras multi-worker workarounds installed")


def _local_value(strategy: tf.distribute.Strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value
