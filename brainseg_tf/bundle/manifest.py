"""The sha256 manifest of a bundle: writing it, and checking a folder against it.

``manifest.sha256`` has one line per file, ``<sha256>  <relative posix path>`` sorted by path (the
format of ``sha256sum``, so ``sha256sum -c manifest.sha256`` run inside the bundle agrees), listing
every regular file of the bundle except the manifest itself. A bundle holds no symbolic links.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path, PurePosixPath

from brainseg_tf.bundle.spec import MANIFEST
from brainseg_tf.errors import BundleError

_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path) -> Path:
    """Hash every file below ``root`` (the manifest excepted) into ``root/manifest.sha256``.

    Raises:
        BundleError: a symbolic link or special file below ``root``, or a file name the format cannot hold.
    """
    lines = []
    for relative in sorted(_files_below(root)):
        if "\n" in relative or "\\" in relative:
            raise BundleError(root / relative, "file name with a newline or backslash cannot be listed in the manifest")
        lines.append(f"{sha256_file(root / relative)}  {relative}\n")
    manifest = root / MANIFEST
    manifest.write_text("".join(lines), encoding="utf-8")
    return manifest


def check_manifest(root: Path, hashed: dict[str, str] | None = None) -> dict[str, str]:
    """Check a bundle folder against its manifest, before anything else in it is read.

    Order: the manifest parses and every listed path stays inside the bundle; the folder holds no
    symbolic links or special files; every listed file exists and no other file does; every file's
    sha256 matches.

    Args:
        root: the bundle folder.
        hashed: sha256 of files below ``root`` already checked against their bytes (an ensemble's
            manifest lists its members' files): these are compared, not hashed again.

    Returns:
        The manifest as ``{relative path: sha256}``.

    Raises:
        BundleError: naming the bundle or the offending file, and the problem.
    """
    manifest = root / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        raise BundleError(root, f"no {MANIFEST} (expected a bundle folder written by brainseg_tf.bundle)")
    listed = parse_manifest(manifest)
    present = _files_below(root)
    missing = sorted(set(listed) - present)
    if missing:
        raise BundleError(root / missing[0], f"missing: listed in {MANIFEST} but not in the bundle ({len(missing)} missing)")
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise BundleError(root / unlisted[0], f"unlisted file: not in {MANIFEST} ({len(unlisted)} unlisted)")
    for relative, expected in listed.items():
        found = (hashed or {}).get(relative) or sha256_file(root / relative)
        if found != expected:
            raise BundleError(
                root / relative, f"sha256 does not match {MANIFEST}: expected {expected[:12]}..., found {found[:12]}..."
            )
    return listed


def parse_manifest(manifest: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a manifest file, refusing paths that could leave the bundle.

    Raises:
        BundleError: unreadable manifest, malformed line, unsafe or repeated path.
    """
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BundleError(manifest, f"cannot read the manifest ({error})") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if not match:
            raise BundleError(manifest, f"line {number}: expected '<64 hex digits>  <relative path>'. Received: {line[:80]!r}")
        digest, relative = match.groups()
        problem = _unsafe(relative)
        if problem:
            raise BundleError(manifest, f"line {number}: refused path {relative!r} ({problem})")
        if relative in entries:
            raise BundleError(manifest, f"line {number}: {relative!r} is listed twice")
        entries[relative] = digest
    return entries


def _unsafe(relative: str) -> str | None:
    """Why a manifest path is refused, or None when it is a plain path inside the bundle."""
    path = PurePosixPath(relative)
    if path.is_absolute() or relative.startswith("/") or re.match(r"^[A-Za-z]:", relative):
        return "absolute path"
    if "\\" in relative:
        return "backslash in path"
    parts = relative.split("/")
    if ".." in parts:
        return "'..' leaves the bundle"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' path component"
    if relative == MANIFEST:
        return "the manifest cannot list itself"
    return None


def _files_below(root: Path) -> set[str]:
    """Relative posix paths of the regular files below ``root``, the top-level manifest excepted.

    Raises:
        BundleError: a symbolic link (file or folder) or a special file below ``root``.
    """
    files: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = Path(folder) / name
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(full, "symbolic link inside a bundle (a bundle holds only plain files and folders)")
            if name in filenames and not stat.S_ISREG(mode):
                raise BundleError(full, "not a regular file (a bundle holds only plain files and folders)")
        for name in filenames:
            files.add((Path(folder) / name).relative_to(root).as_posix())
    files.discard(MANIFEST)
    return files
