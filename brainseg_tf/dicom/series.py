"""Finding DICOM series in a folder tree: files recognised by their DICM preamble, grouped by SeriesInstanceUID.

A series is named in logs, errors and output file names by a non-identifying key, its SeriesNumber and
a short hash of its SeriesInstanceUID (``series 7 #1a2b3c4d``), never by patient or study attributes
or the folder names a PACS export may build from them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from brainseg_tf.dicom.contrast import contrast_warning, named_contrast
from brainseg_tf.io import SUPPORTED_SUFFIXES

logger = logging.getLogger(__name__)

DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
HEADER_TAGS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ProtocolName", "Modality", "SOPClassUID")
"""The attributes discovery reads from each file (no pixel data, no patient attributes)."""


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found on disk: its files and what logs and outputs may call it.

    Attributes:
        uid: SeriesInstanceUID (referenced by the DICOM outputs; never logged).
        number: SeriesNumber, when the files carry one.
        modality: Modality of the first file (e.g. ``MR``).
        files: the series' files, sorted by path.
        contrast: a non-T1 contrast its SeriesDescription or ProtocolName names (e.g. ``FLAIR``), else None.
    """

    uid: str
    number: int | None
    modality: str
    files: tuple[Path, ...]
    contrast: str | None = None

    @property
    def uid_hash(self) -> str:
        """The first 8 hex digits of the SHA-256 of the SeriesInstanceUID."""
        return hashlib.sha256(self.uid.encode("ascii", "replace")).hexdigest()[:8]

    @property
    def key(self) -> str:
        """How logs and errors name the series: ``series 7 #1a2b3c4d`` (``series #1a2b3c4d`` without a number)."""
        return f"series {self.number} #{self.uid_hash}" if self.number is not None else f"series #{self.uid_hash}"

    @property
    def stem(self) -> str:
        """The output file stem: ``series-7-1a2b3c4d`` (``series-1a2b3c4d`` without a number)."""
        return f"series-{self.number}-{self.uid_hash}" if self.number is not None else f"series-{self.uid_hash}"

    @property
    def folder(self) -> Path:
        """The deepest folder holding all of the series' files."""
        return Path(os.path.commonpath([str(f.parent) for f in self.files]))

    @property
    def contrast_warning(self) -> str | None:
        """The QC warning reason when the description names a non-T1 contrast (see `brainseg_tf.dicom.contrast`), else None."""
        return None if self.contrast is None else contrast_warning(self.contrast)


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file that starts like a DICOM Part 10 file (``DICM`` after a 128-byte preamble)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(DICOM_MAGIC_OFFSET)
            return stream.read(len(DICOM_MAGIC)) == DICOM_MAGIC
    except OSError:
        return False


def candidate_files(root: Path) -> list[Path]:
    """Files under ``root`` that may be DICOM: not hidden (nor in a hidden folder), not NIfTI/MGZ, DICM preamble."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.name.lower().endswith(SUPPORTED_SUFFIXES):
            continue
        if path.is_file() and is_dicom_file(path):
            found.append(path)
    return found


def find_series(root: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM series with a file anywhere under ``root`` (hidden files and folders skipped).

    Files without a SeriesInstanceUID (a DICOMDIR) are left out; unreadable files are counted in a
    warning (by number: their paths may hold identifiers) and left out, so a series missing them is
    refused later for its gaps. Reads headers only, never pixel data.

    Returns:
        The series sorted by their folder, number and key.

    Raises:
        ValueError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"Expected a folder to search for DICOM series. Received: {root}")
    return group_series(candidate_files(root))


def group_series(paths: Iterable[Path]) -> list[DicomSeries]:
    """Group DICOM files by SeriesInstanceUID (see `find_series`).

    Raises:
        ValueError: there are files to group but pydicom is not installed.
    """
    paths = list(paths)
    if not paths:
        return []
    try:
        import pydicom  # imported here: NIfTI-only runs never need it
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ValueError(
            f"Expected pydicom to read the {len(paths)} DICOM file(s) found (pip install 'brainseg-tf[dicom]', or skip them with --no-dicom). "
            "Received: no pydicom"
        ) from None

    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    unreadable = 0
    for path in paths:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            unreadable += 1
            continue
        uid = str(header.get("SeriesInstanceUID", "")).strip()
        if uid:
            groups.setdefault(uid, []).append((path, header))
    if unreadable:
        logger.warning("%d DICOM file(s) could not be read and were left out", unreadable)
    series = [_series(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (str(s.folder), s.number if s.number is not None else -1, s.key))


def _series(uid: str, members: list[tuple[Path, object]]) -> DicomSeries:
    members.sort(key=lambda member: str(member[0]))
    first = members[0][1]
    number = first.get("SeriesNumber")  # type: ignore[attr-defined]
    try:
        number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    contrast = named_contrast(str(first.get("SeriesDescription", "") or ""), str(first.get("ProtocolName", "") or ""))  # type: ignore[attr-defined]
    modality = str(first.get("Modality", "") or "").strip().upper()  # type: ignore[attr-defined]
    return DicomSeries(uid, number, modality, tuple(path for path, _ in members), contrast)
