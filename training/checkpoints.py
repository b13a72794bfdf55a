"""Resumable checkpoints of one network's run: the last epoch's model and optimizer, the best weights, a state file.

Layout under ``<run-dir>/checkpoints``::

    last.keras          model, compile settings and optimizer state (iterations, Adam moments) after `epoch`
    best.weights.h5     weights of the epoch with the lowest validation loss so far
    state.json          {"epoch", "best_epoch", "best_value", "best_logs", "stopped"}: written last

Every file is written under a temporary name and renamed when complete, and ``state.json`` goes
after the model files, so a run killed at any moment leaves the previous epoch's checkpoint whole.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

import brainseg_tf.models  # noqa: F401  (registers the custom losses and metrics that checkpoints name)
from brainseg_tf.errors import BrainsegError

logger = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True)
class RunState:
    """Where a run stands after a completed epoch.

    Attributes:
        epoch: the last completed epoch, 0-based (training resumes at ``epoch + 1``).
        best_epoch: the epoch with the lowest validation loss so far.
        best_value: that validation loss.
        best_logs: every log value (training and validation) of the best epoch.
        stopped: early stopping ended the run after `epoch`.
    """

    epoch: int
    best_epoch: int
    best_value: float
    best_logs: dict[str, float] = field(default_factory=dict)
    stopped: bool = False

    def is_complete(self, epochs: int) -> bool:
        """True when nothing is left to train for a run of `epochs` epochs."""
        return self.stopped or self.epoch + 1 >= epochs

    def validation_metrics(self) -> dict[str, float]:
        """The best epoch's validation values (``val_loss``, ``val_dice_<class>``): what bundles report."""
        return {key: float(value) for key, value in self.best_logs.items() if key.startswith("val_")}


class RunCheckpoints:
    """The checkpoint folder of one run.

    Args:
        directory: ``<run-dir>/checkpoints`` (created on the first save).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def last_model(self) -> Path:
        return self.directory / "last.keras"

    @property
    def best_weights(self) -> Path:
        return self.directory / "best.weights.h5"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    def read_state(self) -> RunState | None:
        """The saved state, or None for a fresh run.

        Raises:
            BrainsegError: a state file that cannot be read, or one whose model files are missing.
        """
        if not self.state_file.is_file():
            return None
        try:
            data = json.loads(self.state_file.read_text())
            if data.pop("version", None) != STATE_VERSION:
                raise ValueError(f"expected version {STATE_VERSION}")
            state = RunState(**data)
        except (OSError, ValueError, TypeError) as error:
            raise BrainsegError(f"{self.state_file}: unreadable checkpoint state ({error}); delete the run folder to start over") from None
        for path in (self.last_model, self.best_weights):
            if not path.is_file():
                raise BrainsegError(f"{self.state_file} refers to a missing {path.name}; delete the run folder to start over")
        return state

    def save(self, model: keras.Model, state: RunState, improved: bool) -> None:
        """Save the model after ``state.epoch`` (and its weights as the best when `improved`), then the state."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if improved:
            _replace_atomically(self.best_weights, model.save_weights)
        _replace_atomically(self.last_model, model.save)
        text = json.dumps({"version": STATE_VERSION, **dataclasses.asdict(state)}, indent=2, default=float)
        _replace_atomically(self.state_file, lambda path: Path(path).write_text(text + "\n"))

    def discard_partial_files(self) -> None:
        """Remove temporary files a killed run left behind (never read: only renamed files count)."""
        for partial in self.directory.glob(".*.part-*"):
            logger.debug("removing %s, left by an interrupted save", partial)
            partial.unlink(missing_ok=True)

    def load_last(self) -> keras.Model:
        """The model of the last checkpoint, compiled, with its optimizer state (call inside the strategy scope)."""
        return keras.models.load_model(self.last_model, compile=True, safe_mode=True)


def _replace_atomically(path: Path, write: Any) -> None:
    """Call ``write(temporary)`` then rename the temporary file onto `path` (same folder, same suffixes)."""
    suffix = "".join(path.suffixes)
    temporary = path.with_name(f".{path.name[: -len(suffix)] if suffix else path.name}.part-{os.getpid()}{suffix}")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file under a temporary name and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(path, lambda temporary: Path(temporary).write_text(text))
    return path


def trim_csv_log(path: str | os.PathLike[str], last_epoch: int) -> None:
    """Drop the rows of epochs after `last_epoch` from a CSVLogger file (epochs a killed run logged
    but never checkpointed), so a resumed run logs each epoch once."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    if "epoch" not in header:
        return
    column = header.index("epoch")
    kept = [row for row in body if row and row[column].strip().isdigit() and int(row[column]) <= last_epoch]
    if len(kept) == len(body):
        return
    logger.info("%s: dropping %d row(s) logged after the checkpoint of epoch %d", path, len(body) - len(kept), last_epoch)

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *kept])

    _replace_atomically(path, write)
