"""How TensorFlow runs a training job: distribution strategy, chief election, precision and determinism.

``training.strategy`` picks the `tf.distribute` strategy:

* ``auto``: `MirroredStrategy` when more than one GPU is visible, else the default strategy;
* ``default``: one device, no distribution;
* ``mirrored``: `MirroredStrategy` over the visible GPUs of this machine;
* ``multiworker``: `MultiWorkerMirroredStrategy`, its cluster read from ``TF_CONFIG`` as a cluster
  scheduler sets it, e.g. ``{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type":
  "worker", "index": 0}}``. Where ``TF_CONFIG`` is unset but a Kubernetes Indexed Job's variables
  are set, it is derived from them first (see `training.cluster`).

The chief (task type ``chief``, or worker 0 when the cluster has no chief) is the one process that
writes results; the others write their checkpoints to a temporary folder (`worker_directory`).
Every worker resumes from the chief's checkpoints, so the run folder must be on storage they all read.
Keras 3 needs two workarounds to fit under a multi-worker strategy: see `training.keras_multiworker`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from brainseg_tf.config import TrainingConfig
from brainseg_tf.errors import ConfigError
from training import keras_multiworker
from training.cluster import tf_config_from_environment

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named by ``training.strategy``.

    Create it before any other TensorFlow work: a multi-worker strategy must start first.

    Raises:
        ConfigError: unknown name, or ``multiworker`` without a usable ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"Expected training.strategy in {list(STRATEGIES)}. Received: strategy={name!r}")
    if name == "multiworker":
        _tf_config_from_indexed_job()
        _check_tf_config()
        strategy: tf.distribute.Strategy = tf.distribute.MultiWorkerMirroredStrategy()
        keras_multiworker.install()
    elif name == "mirrored" or (name == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    logger.info("strategy: %s (%s) with %d replica(s)", name, type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def _tf_config_from_indexed_job() -> None:
    """Set TF_CONFIG from a Kubernetes Indexed Job's variables when no scheduler set it."""
    if os.environ.get("TF_CONFIG"):
        return
    text = tf_config_from_environment(os.environ)
    if text is not None:
        os.environ["TF_CONFIG"] = text
        logger.info("TF_CONFIG derived from the Indexed Job: %s", text)


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ConfigError(
            "training.strategy is 'multiworker' but TF_CONFIG is not set (the cluster scheduler sets it, "
            "or training.cluster derives it from a Kubernetes Indexed Job's BRAINSEG_* variables)"
        )
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"Expected TF_CONFIG as JSON. Received: {text[:80]!r} ({error.msg})") from None
    if not isinstance(spec, dict) or "cluster" not in spec or "task" not in spec:
        raise ConfigError(f"Expected TF_CONFIG with 'cluster' and 'task' entries. Received: {text[:80]!r}")


def task_of(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
    """(task type, task index) of this process; (None, None) outside a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes results: no cluster, task ``chief``, or worker 0 without a chief."""
    task_type, task_id = task_of(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_directory(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes checkpoints and logs: the run folder for the chief, a new temp folder otherwise."""
    if is_chief(strategy):
        return run_dir
    task_type, task_id = task_of(strategy)
    return Path(tempfile.mkdtemp(prefix=f"brainseg-{task_type}-{task_id}-"))


def configure_precision(mixed_precision: bool) -> str:
    """Set the global Keras dtype policy; mixed_float16 only where a GPU is visible. Returns the policy name."""
    policy = "float32"
    if mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            policy = "mixed_float16"
        else:
            logger.warning("training.mixed_precision ignored: no GPU visible, training in float32")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def seed_everything(training: TrainingConfig) -> None:
    """Seed Python, NumPy and TensorFlow from ``training.seed``; with ``training.deterministic``, also
    make TensorFlow ops deterministic (process-wide and irreversible)."""
    keras.utils.set_random_seed(training.seed)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
