"""Process-wide settings of the TensorFlow runtime, made once by entry points (CLIs, plugins, jobs) before any model loads."""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn() -> None:
    """Ask TensorFlow for its oneDNN CPU kernels unless the environment already chose.

    TensorFlow's x86 builds leave oneDNN off on CPUs without AVX-512 VNNI/BF16/AMX (most of what a
    cluster runs); with it, the bundles' folded convolution + bias + ReLU run as one fused kernel,
    about twice as fast (docs/benchmarks.md). ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment keeps
    it off; builds without oneDNN (ppc64le) ignore the variable. TensorFlow reads it once, when it
    is imported: entry points call this first.
    """
    os.environ.setdefault(ONEDNN_VARIABLE, "1")
    if "tensorflow" in sys.modules:
        logger.debug("%s set after TensorFlow was imported: it may not take effect", ONEDNN_VARIABLE)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the notices its native code prints while starting discarded.

    Before its logging is set up, TensorFlow writes start-up notices straight to file descriptor 2,
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says (e.g. "oneDNN custom operations are on" and absl's
    preamble). Job logs keep one line per failure on stderr, so entry points import it through
    this. Python errors still raise; a TensorFlow already imported is left as it is.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
