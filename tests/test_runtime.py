"""Process-wide TensorFlow settings of the entry points: oneDNN by default, a quiet start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainseg_tf.runtime import ONEDNN_VARIABLE, prefer_onednn

REPO = Path(__file__).resolve().parents[1]


def test_prefer_onednn_turns_it_on_unless_the_environment_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    prefer_onednn()
    assert os.environ[ONEDNN_VARIABLE] == "1"
    monkeypatch.setenv(ONEDNN_VARIABLE, "0")
    prefer_onednn()
    assert os.environ[ONEDNN_VARIABLE] == "0"


def _stderr_of(code: str) -> str:
    environment = {**os.environ, ONEDNN_VARIABLE: "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120, check=True)
    return done.stderr


def test_tensorflow_starts_without_notices_on_stderr() -> None:
    loud = _stderr_of("import tensorflow as tf; tf.constant(1.0)")
    quiet = _stderr_of("from brainseg_tf.runtime import import_tensorflow_quietly as q; q(); import sys, tensorflow as tf; "
                       "tf.constant(1.0); print('after', file=sys.stderr)")
    assert "oneDNN" in loud  # what the plain import prints here, whatever TF_CPP_MIN_LOG_LEVEL says
    assert quiet == "after\n"  # stderr works again once TensorFlow is in
