"""Verifying a bundle (manifest first, then bundle.json, then ensemble members) and reading its description."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainseg_tf.bundle.manifest import check_manifest, sha256_file
from brainseg_tf.bundle.spec import (
    ATLAS_FRAME_KEY,
    BRAIN_EXTRACTOR_DIR,
    BUNDLE_JSON,
    FAMILIES,
    KERAS_FILE,
    KINDS,
    MANIFEST,
    MEMBER_NAME_PATTERN,
    MEMBERS_DIR,
    MIRRORED_CLASS_KEY,
    READABLE_FORMAT_VERSIONS,
    REGION_KEY,
    REQUIRED_KEYS,
    SAVED_MODEL_DIR,
)
from brainseg_tf.errors import BundleError, LabelError
from brainseg_tf.families import Family
from brainseg_tf.labels import BRAIN, LabelSet
from brainseg_tf.preprocessing import InputSpec
from brainseg_tf.regions import AtlasFrame, Region


@dataclass(frozen=True)
class BundleInfo:
    """What a verified bundle says about itself (see `read_bundle_info`).

    Attributes:
        path: the bundle folder.
        kind: ``"model"`` or ``"ensemble"``.
        family: the networks' family.
        class_index: the class a single_class model segments; None for multiclass models and ensembles.
        label_set: the classes, background first.
        input_spec: the input contract: how inputs are prepared and read.
        metrics: validation metrics recorded at training time.
        members: an ensemble's member models, in bundle order; empty for a model.
        config: the effective training config, as a plain dict.
        brain_extractor: the brain-extraction network run before this segmenter's networks (a
            single_class model on the ``brain`` label set); None when the bundle has none.
        mirrored_class_index: for an ensemble's member, the class it also segments on the left/right mirror of
            the volume (the partner of its class, format 3); None otherwise.
        region: for an ensemble's member, the atlas box it reads (format 3, `brainseg_tf.regions`); None: the whole volume.
        atlas_frame: for an ensemble whose members have regions, the atlas brain's moments they are carried by.
    """

    path: Path
    kind: str
    family: Family
    class_index: int | None
    label_set: LabelSet
    input_spec: InputSpec
    metrics: dict[str, float | None]
    members: list[BundleInfo] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    brain_extractor: BundleInfo | None = None
    mirrored_class_index: int | None = None
    region: Region | None = None
    atlas_frame: AtlasFrame | None = None


def verify_bundle(path: str | os.PathLike[str], hashed: dict[str, str] | None = None) -> dict[str, Any]:
    """Check a bundle completely before anything in it is trusted.

    First the manifest (every listed file present with the right sha256, no other file, no path
    leaving the bundle, no symbolic link), then ``bundle.json`` (parses, required keys, supported
    ``format_version``, consistent kind / family / class_index / label set, the files its kind
    needs), then, for an ensemble, each member recursively and its recorded manifest checksum, and
    the brain extractor, if any, the same way.

    Args:
        path: the bundle folder.
        hashed: sha256 of its files already checked on disk (given for an ensemble's members, whose
            files the ensemble's manifest lists: each file is hashed once).

    Returns:
        The parsed ``bundle.json``.

    Raises:
        BundleError: ``"<path>: <problem>"`` naming the bundle or the offending file.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(root, "not a bundle folder (expected a folder with bundle.json and manifest.sha256)")
    listed = check_manifest(root, hashed)
    data = _read_bundle_json(root)
    _check_description(root, data)
    if data["kind"] == "model":
        for required in (KERAS_FILE, f"{SAVED_MODEL_DIR}/saved_model.pb"):
            if required not in listed:
                raise BundleError(root, f"model bundle without {required}")
    else:
        _check_members(root, data, listed)
    if BRAIN_EXTRACTOR_KEY in data:
        _check_brain_extractor(root, data, listed)
    return data


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Verify a bundle, then describe it (members included) as a `BundleInfo`.

    Raises:
        BundleError: the bundle fails `verify_bundle`.
    """
    root = Path(path)
    return _info(root, verify_bundle(root))


def _info(root: Path, data: dict[str, Any]) -> BundleInfo:
    file = root / BUNDLE_JSON
    members = [dataclasses.replace(_info(root / m["path"], _read_bundle_json(root / m["path"])), mirrored_class_index=m.get(MIRRORED_CLASS_KEY),
                                   region=_member_region(file, m, data))
               for m in data.get("members", [])]
    extractor = data.get(BRAIN_EXTRACTOR_KEY)
    extractor_root = root / BRAIN_EXTRACTOR_DIR
    return BundleInfo(
        path=root,
        kind=data["kind"],
        family=Family(data["family"]),
        class_index=data["class_index"],
        label_set=LabelSet.from_dict(data["label_set"]),
        input_spec=InputSpec.from_dict(data["input_spec"]),
        metrics=dict(data["metrics"]),
        members=members,
        config=dict(data["config"]),
        brain_extractor=None if extractor is None else _info(extractor_root, _read_bundle_json(extractor_root)),
        atlas_frame=_atlas_frame(file, data),
    )


def _read_bundle_json(root: Path) -> dict[str, Any]:
    file = root / BUNDLE_JSON
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(root, f"no {BUNDLE_JSON}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(file, f"cannot parse ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise BundleError(file, f"expected a JSON object. Received: {type(data).__name__}")
    return data


def _check_description(root: Path, data: dict[str, Any]) -> None:
    file = root / BUNDLE_JSON
    version = data.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):  # first: another version may have other keys
        readable = " and ".join(str(v) for v in READABLE_FORMAT_VERSIONS)
        raise BundleError(file, f"unsupported format_version {version!r} (this brainseg_tf reads {readable})")
    if BRAIN_EXTRACTOR_KEY in data and version < 2:
        raise BundleError(file, f"a brain extractor needs format_version 2 or later. Received: {version!r}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise BundleError(file, f"missing key(s) {missing}")
    if data["kind"] not in KINDS:
        raise BundleError(file, f"expected kind in {list(KINDS)}. Received: {data['kind']!r}")
    if data["family"] not in FAMILIES:
        raise BundleError(file, f"expected family in {list(FAMILIES)}. Received: {data['family']!r}")
    for key in ("label_set", "input_spec", "config", "metrics", "versions"):
        if not isinstance(data[key], dict):
            raise BundleError(file, f"expected {key} as an object. Received: {type(data[key]).__name__}")
    try:
        label_set = LabelSet.from_dict(data["label_set"])
    except (LabelError, KeyError, TypeError, ValueError) as error:
        raise BundleError(file, f"invalid label_set ({error})") from None
    try:
        InputSpec.from_dict(data["input_spec"])
    except ValueError as error:
        raise BundleError(file, f"unusable input_spec: {error}") from None
    _check_class_index(file, data, label_set)


def _check_class_index(file: Path, data: dict[str, Any], label_set: LabelSet) -> None:
    index = data["class_index"]
    if data["kind"] == "model" and data["family"] == "single_class":
        if isinstance(index, bool) or not isinstance(index, int) or index not in label_set.foreground_classes:
            raise BundleError(
                file, f"expected class_index in {list(label_set.foreground_classes)} for a single_class model. Received: {index!r}"
            )
    elif index is not None:
        raise BundleError(file, f"expected class_index null for a {data['family']} {data['kind']}. Received: {index!r}")
    if data["kind"] == "ensemble" and data["family"] != "single_class":
        raise BundleError(file, f"expected family 'single_class' for an ensemble. Received: {data['family']!r}")


def _check_members(root: Path, data: dict[str, Any], listed: dict[str, str]) -> None:
    file = root / BUNDLE_JSON
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise BundleError(file, f"expected members as a non-empty list for an ensemble. Received: {members!r}")
    seen: set[int] = set()
    for entry in members:
        if not isinstance(entry, dict) or not {"name", "class_index", "path", "sha256"} <= set(entry):
            raise BundleError(file, f"expected each member as {{name, class_index, path, sha256}}. Received: {entry!r}")
        name = entry["name"]
        if not isinstance(name, str) or not MEMBER_NAME_PATTERN.match(name) or entry["path"] != f"{MEMBERS_DIR}/{name}":
            raise BundleError(file, f"refused member path {entry['path']!r} (expected '{MEMBERS_DIR}/<name>' with name [0-9a-z_]+)")
        member_root = root / entry["path"]
        prefix = f"{entry['path']}/"
        member = verify_bundle(member_root, {path[len(prefix) :]: digest for path, digest in listed.items() if path.startswith(prefix)})
        found = listed.get(f"{prefix}{MANIFEST}") or sha256_file(member_root / MANIFEST)
        if found != entry["sha256"]:
            recorded = str(entry["sha256"])[:12]
            raise BundleError(
                member_root / MANIFEST, f"sha256 does not match the ensemble's bundle.json: expected {recorded}..., found {found[:12]}..."
            )
        _check_member_agrees(member_root, member, entry, data)
        _member_region(file, entry, data)
        for index in (entry["class_index"], *_mirrored_class(file, entry, data)):
            if index in seen:
                raise BundleError(file, f"two members segment class {index}")
            seen.add(index)


def _atlas_frame(file: Path, ensemble: dict[str, Any]) -> AtlasFrame | None:
    """The ensemble's atlas frame (`ATLAS_FRAME_KEY`), checked; None when it has none."""
    if ATLAS_FRAME_KEY not in ensemble:
        return None
    if ensemble["format_version"] < 3:
        raise BundleError(file, f"an atlas frame needs format_version 3 or later. Received: {ensemble['format_version']}")
    try:
        return AtlasFrame.from_dict(ensemble[ATLAS_FRAME_KEY])
    except (TypeError, ValueError) as error:
        raise BundleError(file, f"bad {ATLAS_FRAME_KEY}: {error}") from None


def _member_region(file: Path, entry: dict[str, Any], ensemble: dict[str, Any]) -> Region | None:
    """A member's atlas box (`REGION_KEY`), checked; None when it reads the whole volume."""
    if REGION_KEY not in entry:
        return None
    if _atlas_frame(file, ensemble) is None:
        raise BundleError(file, f"member {entry['name']!r}: a {REGION_KEY} needs the ensemble's {ATLAS_FRAME_KEY}. Received: none")
    try:
        return Region.from_list(entry[REGION_KEY])
    except (TypeError, ValueError) as error:
        raise BundleError(file, f"member {entry['name']!r}: bad {REGION_KEY}: {error}") from None


def _mirrored_class(file: Path, entry: dict[str, Any], ensemble: dict[str, Any]) -> tuple[int, ...]:
    """The class a member also segments on the mirrored volume (`MIRRORED_CLASS_KEY`): its class's left/right partner."""
    if MIRRORED_CLASS_KEY not in entry:
        return ()
    if ensemble["format_version"] < 3:
        raise BundleError(file, f"a mirrored member needs format_version 3 or later. Received: {ensemble['format_version']}")
    partners = LabelSet.from_dict(ensemble["label_set"]).lr_partners()
    mirrored = entry[MIRRORED_CLASS_KEY]
    expected = partners.get(entry["class_index"])
    if isinstance(mirrored, bool) or mirrored != expected:
        raise BundleError(file, f"member {entry['name']!r}: expected {MIRRORED_CLASS_KEY} {expected} (the left/right partner of class "
                                f"{entry['class_index']}). Received: {mirrored!r}")
    return (int(mirrored),)


BRAIN_EXTRACTOR_KEY = "brain_extractor"


def _check_brain_extractor(root: Path, data: dict[str, Any], listed: dict[str, str]) -> None:
    """The brain extractor: where the format puts it, verified like a member, on the ``brain`` label set."""
    file = root / BUNDLE_JSON
    entry = data[BRAIN_EXTRACTOR_KEY]
    if not isinstance(entry, dict) or set(entry) != {"path", "sha256"} or entry["path"] != BRAIN_EXTRACTOR_DIR:
        raise BundleError(file, f"expected brain_extractor as {{path: {BRAIN_EXTRACTOR_DIR!r}, sha256}}. Received: {entry!r}")
    extractor_root = root / BRAIN_EXTRACTOR_DIR
    prefix = f"{BRAIN_EXTRACTOR_DIR}/"
    extractor = verify_bundle(extractor_root, {path[len(prefix) :]: digest for path, digest in listed.items() if path.startswith(prefix)})
    found = listed.get(f"{prefix}{MANIFEST}") or sha256_file(extractor_root / MANIFEST)
    if found != entry["sha256"]:
        raise BundleError(
            extractor_root / MANIFEST, f"sha256 does not match bundle.json's brain_extractor: expected {str(entry['sha256'])[:12]}..., found {found[:12]}..."
        )
    expected = {"kind": "model", "family": "single_class", "class_index": 1, "label_set": BRAIN.to_dict()}
    for key, value in expected.items():
        if extractor[key] != value:
            raise BundleError(extractor_root / BUNDLE_JSON, f"not a brain extractor: expected {key} {value!r}, found {extractor[key]!r}")
    if BRAIN_EXTRACTOR_KEY in extractor:
        raise BundleError(extractor_root / BUNDLE_JSON, "a brain extractor cannot hold a brain extractor of its own")


def _check_member_agrees(member_root: Path, member: dict[str, Any], entry: dict[str, Any], ensemble: dict[str, Any]) -> None:
    expected = {
        "kind": "model",
        "family": "single_class",
        "class_index": entry["class_index"],
        "label_set": ensemble["label_set"],
        "input_spec": ensemble["input_spec"],
    }
    for key, value in expected.items():
        if member[key] != value:
            raise BundleError(member_root / BUNDLE_JSON, f"{key} disagrees with the ensemble: expected {value!r}, found {member[key]!r}")
    if BRAIN_EXTRACTOR_KEY in member:
        raise BundleError(member_root / BUNDLE_JSON, "an ensemble member cannot hold a brain extractor (the ensemble holds it)")
