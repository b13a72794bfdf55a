"""Atomic placement of a bundle folder: staged in a hidden sibling, then renamed onto its target."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from brainseg_tf.bundle.spec import BUNDLE_JSON, MANIFEST
from brainseg_tf.errors import BundleError


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh hidden folder next to ``target``, renamed onto it if the block succeeds, removed otherwise."""
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()  # mode from the umask, so the renamed bundle is as readable as any folder
    try:
        yield staging
        _check_replaceable(target)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_replaceable(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise BundleError(target, "exists and is not a bundle folder; refusing to replace it")
    if target.is_dir() and any(target.iterdir()):
        if not ((target / BUNDLE_JSON).is_file() and (target / MANIFEST).is_file()):
            raise BundleError(target, f"exists and is not a bundle (no {BUNDLE_JSON} and {MANIFEST}); refusing to replace it")


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
