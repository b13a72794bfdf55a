"""Test-wide settings: quiet TensorFlow, and no test writes outside its temporary folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _restore_onednn_variable():
    """Entry points run in-process set TF_ENABLE_ONEDNN_OPTS; later tests' subprocesses must not inherit it."""
    before = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    yield
    if before is None:
        os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
    else:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = before


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches built without an explicit cache_dir land in a session temp folder, never in ~/.cache."""
    os.environ["BRAINSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("brainseg-cache"))


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Entry points configure the root logger for their process (the plugins add a stdout handler); a test
    that runs one in-process must not leave a handler on a stream pytest has closed for the next test."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
