"""The HDF5 cache every dataset source lands in: conformed, normalised subjects with class-index labels.

Layout of one cache file::

    /                      attrs: format_version, recipe (JSON), recipe_hash, label_set (JSON)
    /subjects/<id>/image   float32 (I, J, K), RAS+, intensities in [0, 1]
    /subjects/<id>/classes uint8   (I, J, K), class indices of the label set
                           attrs: affine (4x4), split ("train" | "val" | "test"), source (free text)

A cache is written under a temporary name and renamed when complete, so a killed build never
leaves a file that looks finished. Its name carries the recipe hash: a changed recipe builds anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from brainseg_tf.errors import DatasetError
from brainseg_tf.labels import LabelSet

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Subject:
    """One conformed, normalised subject ready for sampling.

    Attributes:
        subject_id: identifier, unique within the cache (never a patient name).
        image: float32 (I, J, K) on the canonical RAS+ grid, intensities in [0, 1].
        classes: uint8 (I, J, K) class indices of the cache's label set, same grid.
        affine: 4x4 voxel-to-world matrix of that grid.
        split: ``train``, ``val`` or ``test``.
    """

    subject_id: str
    image: np.ndarray
    classes: np.ndarray
    affine: np.ndarray
    split: Split

    def __post_init__(self) -> None:
        if self.image.shape != self.classes.shape or self.image.ndim != 3:
            raise DatasetError(
                f"Subject {self.subject_id}: expected 3D image and classes of one shape. "
                f"Received: image {self.image.shape}, classes {self.classes.shape}"
            )
        if self.split not in SPLITS:
            raise DatasetError(f"Subject {self.subject_id}: expected split in {SPLITS}. Received: {self.split!r}")


@dataclass(frozen=True)
class CacheInfo:
    """What a cache file holds, read from its attributes alone."""

    path: Path
    label_set: LabelSet
    recipe: dict[str, Any]
    recipe_hash: str
    splits: dict[str, list[str]]  # split -> subject ids, in stored order


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable recipe (sorted keys)."""
    text = json.dumps({"format_version": FORMAT_VERSION, **recipe}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike[str], name: str, recipe: dict[str, Any]) -> Path:
    """``<cache_dir>/<name>-<recipe hash>.h5``."""
    return Path(cache_dir) / f"{name}-{recipe_hash(recipe)}.h5"


def write_cache(path: str | os.PathLike[str], subjects: Iterable[Subject], label_set: LabelSet, recipe: dict[str, Any]) -> Path:
    """Write subjects to a new cache file atomically.

    Raises:
        DatasetError: a subject id repeats, or no subject was given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part-{uuid.uuid4().hex}")  # unique across hosts sharing a volume, where every PID may be 1
    count = 0
    try:
        with h5py.File(temporary, "w") as h5:
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["recipe"] = json.dumps(recipe, sort_keys=True, default=str)
            h5.attrs["recipe_hash"] = recipe_hash(recipe)
            h5.attrs["label_set"] = json.dumps(label_set.to_dict())
            group = h5.create_group("subjects")
            for subject in subjects:
                _write_subject(group, subject, label_set)
                count += 1
        if count == 0:
            raise DatasetError(f"{path}: no subjects to cache")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("cached %d subjects in %s", count, path)
    return path


def read_info(path: str | os.PathLike[str]) -> CacheInfo:
    """Read a cache's attributes and subject list without loading voxels.

    Raises:
        DatasetError: missing file, unreadable HDF5 or another format version.
    """
    path = Path(path)
    with _open(path) as h5:
        version = int(h5.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DatasetError(f"{path}: cache format {version}, expected {FORMAT_VERSION}; delete it to rebuild")
        splits: dict[str, list[str]] = {s: [] for s in SPLITS}
        for subject_id, group in h5["subjects"].items():
            splits[str(group.attrs["split"])].append(subject_id)
        return CacheInfo(
            path=path,
            label_set=LabelSet.from_dict(json.loads(h5.attrs["label_set"])),
            recipe=json.loads(h5.attrs["recipe"]),
            recipe_hash=str(h5.attrs["recipe_hash"]),
            splits=splits,
        )


def read_subjects(path: str | os.PathLike[str], split: Split | None = None) -> list[Subject]:
    """Load the subjects of one split (all splits when None) into memory, in stored order."""
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DatasetError(f"Expected split in {SPLITS}. Received: {split!r}")
    subjects = []
    with _open(path) as h5:
        for subject_id, group in h5["subjects"].items():
            if split is None or group.attrs["split"] == split:
                subjects.append(
                    Subject(
                        subject_id=subject_id,
                        image=group["image"][()],
                        classes=group["classes"][()],
                        affine=np.asarray(group.attrs["affine"], dtype=np.float64),
                        split=str(group.attrs["split"]),  # type: ignore[arg-type]
                    )
                )
    return subjects


def _write_subject(group: h5py.Group, subject: Subject, label_set: LabelSet) -> None:
    if subject.subject_id in group:
        raise DatasetError(f"Subject id {subject.subject_id!r} appears twice")
    if subject.classes.size and int(subject.classes.max()) >= label_set.num_classes:
        raise DatasetError(
            f"Subject {subject.subject_id}: class index {int(subject.classes.max())} outside label set "
            f"{label_set.name!r} ({label_set.num_classes} classes)"
        )
    entry = group.create_group(subject.subject_id)
    chunks = tuple(min(n, 64) for n in subject.image.shape)
    entry.create_dataset("image", data=subject.image.astype(np.float32), chunks=chunks, compression="gzip", compression_opts=1)
    entry.create_dataset("classes", data=subject.classes.astype(np.uint8), chunks=chunks, compression="gzip", compression_opts=1)
    entry.attrs["affine"] = np.asarray(subject.affine, dtype=np.float64)
    entry.attrs["split"] = subject.split


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DatasetError(f"{path}: no such cache file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path}: not a readable HDF5 cache ({error})") from None
