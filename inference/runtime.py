"""Process-wide settings of the TensorFlow runtime, made once by entry points before any model loads."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def configure_threads(threads: int | None) -> None:
    """Limit TensorFlow's CPU threads (intra-op to ``threads``, inter-op to 1-2); None keeps its default (all cores).

    Must run before TensorFlow executes anything: the settings cannot change afterwards.

    Raises:
        ValueError: ``threads`` below 1, or TensorFlow already initialised.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"Expected threads >= 1. Received: threads={threads}")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError as error:
        raise ValueError(f"Expected to set threads before TensorFlow starts. Received: {error}") from None
    logger.debug("TensorFlow limited to %d intra-op threads", threads)
