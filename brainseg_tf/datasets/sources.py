"""User datasets: a CSV manifest, or a FreeSurfer SUBJECTS_DIR; both become a list of `SourceRecord`s."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainseg_tf.datasets.cache import SPLITS, Split
from brainseg_tf.errors import DatasetError

MANIFEST_COLUMNS = ("subject", "image", "label")
FREESURFER_IMAGES = ("mri/norm.mgz", "mri/brain.mgz")  # first one present wins
FREESURFER_LABELS = "mri/aseg.mgz"
_SUBJECT_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class SourceRecord:
    """One subject of a user dataset: where its image and label map are, and its split if given."""

    subject_id: str
    image: Path
    label: Path
    split: Split | None = None


def read_manifest(path: str | os.PathLike[str]) -> list[SourceRecord]:
    """Read a CSV manifest with columns ``subject,image,label`` and an optional ``split``.

    Relative paths are taken from the manifest's folder.

    Raises:
        DatasetError: missing columns, empty manifest, repeated subjects, bad split values, missing files.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0].keys()) if rows else set()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read manifest ({error.strerror})") from None
    if not rows:
        raise DatasetError(f"{path}: manifest has no subjects")
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"{path}: manifest lacks column(s) {missing}; expected {list(MANIFEST_COLUMNS)} [+ split]")
    records = [_manifest_record(path, number, row) for number, row in enumerate(rows, start=2)]
    _check_unique(path, records)
    return records


def discover_freesurfer(subjects_dir: str | os.PathLike[str]) -> list[SourceRecord]:
    """Find FreeSurfer subjects: folders with ``mri/aseg.mgz`` and ``mri/norm.mgz`` (or ``mri/brain.mgz``).

    ``fsaverage*`` template subjects are skipped.

    Raises:
        DatasetError: the folder does not exist or holds no usable subject.
    """
    root = Path(subjects_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: SUBJECTS_DIR is not a folder")
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("fsaverage")):
        label = folder / FREESURFER_LABELS
        image = next((folder / name for name in FREESURFER_IMAGES if (folder / name).is_file()), None)
        if image is not None and label.is_file():
            records.append(SourceRecord(_checked_id(root, folder.name), image, label))
    if not records:
        raise DatasetError(f"{root}: no subject with {FREESURFER_LABELS} and one of {list(FREESURFER_IMAGES)}")
    return records


def assign_splits(records: list[SourceRecord], val_fraction: float, test_fraction: float, seed: int) -> list[SourceRecord]:
    """Give records without a split one, by subject: a seeded shuffle, then test, val, train shares.

    Records that already carry a split keep it. With three or more unsplit subjects, val and
    test each get at least one when their fraction is above zero.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"Expected val_fraction and test_fraction in [0, 1) summing below 1. "
            f"Received: val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    unsplit = sorted((r for r in records if r.split is None), key=lambda r: r.subject_id)
    order = np.random.default_rng(seed).permutation(len(unsplit))
    n_test = _share(len(unsplit), test_fraction)
    n_val = _share(len(unsplit), val_fraction)
    chosen: dict[str, Split] = {}
    for rank, position in enumerate(order):
        chosen[unsplit[position].subject_id] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [r if r.split is not None else SourceRecord(r.subject_id, r.image, r.label, chosen[r.subject_id]) for r in records]


def _share(count: int, fraction: float) -> int:
    if fraction <= 0 or count == 0:
        return 0
    return max(1, int(round(count * fraction))) if count >= 3 else 0


def _manifest_record(path: Path, line: int, row: dict[str, str]) -> SourceRecord:
    subject = (row.get("subject") or "").strip()
    split = (row.get("split") or "").strip() or None
    if split is not None and split not in SPLITS:
        raise DatasetError(f"{path}: line {line}: split {split!r}; expected one of {list(SPLITS)} or empty")
    files = []
    for column in ("image", "label"):
        value = (row.get(column) or "").strip()
        if not value:
            raise DatasetError(f"{path}: line {line}: empty {column} path")
        file = Path(value) if os.path.isabs(value) else path.parent / value
        if not file.is_file():
            raise DatasetError(f"{path}: line {line}: {column} file {file} does not exist")
        files.append(file)
    return SourceRecord(_checked_id(path, subject, line), files[0], files[1], split)  # type: ignore[arg-type]


def _checked_id(source: Path, subject: str, line: int | None = None) -> str:
    if not _SUBJECT_ID.match(subject):
        where = f"line {line}: " if line is not None else ""
        raise DatasetError(f"{source}: {where}subject id {subject!r} must use only letters, digits, '.', '_' and '-'")
    return subject


def _check_unique(path: Path, records: list[SourceRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.subject_id in seen:
            raise DatasetError(f"{path}: subject {record.subject_id!r} appears more than once")
        seen.add(record.subject_id)
