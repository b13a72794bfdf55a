"""A run's configuration: checks of the training section, and the ``config.yaml`` saved in each run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from brainseg_tf.config import Config, TrainingConfig
from brainseg_tf.errors import ConfigError
from training.checkpoints import write_text_atomically

logger = logging.getLogger(__name__)


def check_training_config(training: TrainingConfig) -> None:
    """Raise `ConfigError` for training settings outside their accepted range."""
    if isinstance(training.epochs, bool) or training.epochs < 1:
        raise ConfigError(f"Expected training.epochs >= 1. Received: epochs={training.epochs!r}")
    if training.early_stopping_patience < 0:
        raise ConfigError(
            f"Expected training.early_stopping_patience >= 0 (0 disables). Received: {training.early_stopping_patience!r}"
        )
    if not training.learning_rate > 0:
        raise ConfigError(f"Expected training.learning_rate > 0. Received: learning_rate={training.learning_rate!r}")
    if not 0 < training.final_learning_rate_fraction <= 1:
        raise ConfigError(
            "Expected training.final_learning_rate_fraction in (0, 1]. "
            f"Received: final_learning_rate_fraction={training.final_learning_rate_fraction!r}"
        )
    if training.validation_samples < 1:
        raise ConfigError(f"Expected training.validation_samples >= 1. Received: {training.validation_samples!r}")


def save_config(run_dir: Path, config: Config) -> Path:
    """Write ``<run_dir>/config.yaml``; warn when it replaces a different one (other than the epoch count)."""
    path = run_dir / "config.yaml"
    new = config.to_dict()
    if path.is_file():
        old = yaml.safe_load(path.read_text()) or {}
        changed = [key for key in _differences(old, new) if key != "training.epochs"]
        if changed:
            logger.warning("%s: the configuration changed since the run began: %s", path, ", ".join(changed))
    return write_text_atomically(path, yaml.safe_dump(new, sort_keys=False))


def _differences(old: object, new: object, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]
