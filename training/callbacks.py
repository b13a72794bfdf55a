"""Keras callbacks of a training run: per-epoch resumable checkpoints, resumable early stopping, logs."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import keras

from brainseg_tf.config import TrainingConfig
from training.checkpoints import RunCheckpoints, RunState

logger = logging.getLogger(__name__)

MONITOR = "val_loss"


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: keep the best weights by validation loss, save the model with its optimizer
    state, then the run state (see `training.checkpoints`).

    Place it after `ResumableEarlyStopping` so the state records a stop decided at the same epoch.

    Args:
        checkpoints: the run's checkpoint folder (the chief's, or a worker's temporary one).
        state: the state to continue from; None for a fresh run.
    """

    def __init__(self, checkpoints: RunCheckpoints, state: RunState | None = None) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.state = state

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {key: float(value) for key, value in (logs or {}).items()}
        current = logs.get(MONITOR, math.nan)
        improved = self.state is None or current < self.state.best_value
        if improved:
            best_epoch, best_value, best_logs = epoch, current, logs
        else:
            best_epoch, best_value, best_logs = self.state.best_epoch, self.state.best_value, self.state.best_logs
        self.state = RunState(
            epoch=epoch, best_epoch=best_epoch, best_value=best_value, best_logs=best_logs,
            stopped=bool(getattr(self.model, "stop_training", False)),
        )
        self.checkpoints.save(self.model, self.state, improved=improved)
        logger.debug("checkpoint of epoch %d saved (best: epoch %d, %s %.4f)", epoch, best_epoch, MONITOR, best_value)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` on the validation loss that continues a resumed run's count of epochs without improvement.

    Best weights are not held in memory: the run restores them from the checkpoint folder at the end
    (`EpochCheckpoint` keeps them on disk), which also covers runs that were resumed.

    Args:
        patience: epochs without a lower validation loss before stopping (>= 1).
        state: the state to continue from; None for a fresh run.
    """

    def __init__(self, patience: int, state: RunState | None = None) -> None:
        super().__init__(monitor=MONITOR, mode="min", patience=patience, restore_best_weights=False)
        self.resume_state = state

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.resume_state is not None:
            self.best = self.resume_state.best_value
            self.best_epoch = self.resume_state.best_epoch
            self.wait = self.resume_state.epoch - self.resume_state.best_epoch


def learning_rate_at(epoch: int, training: TrainingConfig) -> float:
    """The learning rate of `epoch` (0-based): constant, or a cosine from ``learning_rate`` at epoch 0 down to
    ``learning_rate * final_learning_rate_fraction`` at the last epoch. A function of the epoch alone, so a
    resumed run continues the same schedule."""
    if training.learning_rate_schedule == "constant" or training.epochs == 1:
        return training.learning_rate
    progress = min(max(epoch, 0), training.epochs - 1) / (training.epochs - 1)
    final = training.learning_rate * training.final_learning_rate_fraction
    return final + 0.5 * (training.learning_rate - final) * (1.0 + math.cos(math.pi * progress))


def make_callbacks(
    checkpoints: RunCheckpoints,
    state: RunState | None,
    *,
    training: TrainingConfig,
    log_dir: Path,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one run, in order: CSV log, learning-rate schedule (unless constant), early stopping
    (unless its patience is 0), checkpoint, TensorBoard.

    The CSV log goes to ``<log_dir>/log.csv`` (appended to on resume), TensorBoard to ``<log_dir>/tensorboard``
    (skipped with a warning when the `tensorboard` package is not installed).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.CSVLogger(str(log_dir / "log.csv"), append=True)]
    if training.learning_rate_schedule != "constant":
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch, _rate: learning_rate_at(epoch, training)))
    if training.early_stopping_patience > 0:
        callbacks.append(ResumableEarlyStopping(training.early_stopping_patience, state))
    callbacks.append(EpochCheckpoint(checkpoints, state))
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir / "tensorboard"), write_graph=False, profile_batch=0))
    else:
        logger.warning("TensorBoard is not installed: no event files in %s (pip install tensorboard)", log_dir / "tensorboard")
    return callbacks


def tensorboard_available() -> bool:
    """True when the `tensorboard` package (which TensorFlow's summary writers need) is importable."""
    return importlib.util.find_spec("tensorboard") is not None
