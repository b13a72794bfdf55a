"""A segmenter bundle's brain extractor: copied in at ``brain_extractor/`` and recorded in ``bundle.json``.

The extractor is a complete single_class model bundle on the ``brain`` label set (trained with
``python -m training single-class --label brain --set data.heads=brain``). Inside a segmenter bundle it
is verified like an ensemble member: the outer manifest lists its files, ``bundle.json`` records the
sha256 of its manifest. `attach_brain_extractor` adds one to (or replaces it in) an existing bundle;
the writers take one directly (``write_model_bundle(..., brain_extractor=...)``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from brainseg_tf.bundle.manifest import sha256_file, write_manifest
from brainseg_tf.bundle.spec import BRAIN_EXTRACTOR_DIR, BUNDLE_JSON, FORMAT_VERSION, MANIFEST
from brainseg_tf.bundle.staging import staged
from brainseg_tf.bundle.verify import BRAIN_EXTRACTOR_KEY, verify_bundle
from brainseg_tf.errors import BundleError
from brainseg_tf.labels import BRAIN

logger = logging.getLogger(__name__)


def check_brain_extractor_source(source: str | os.PathLike[str]) -> Path:
    """Verify a bundle that is to become a brain extractor: a single_class model on the ``brain`` label set.

    Raises:
        BundleError: it fails verification or is not a brain extractor.
    """
    path = Path(source)
    data = verify_bundle(path)
    if (data["kind"], data["family"], data["label_set"]) != ("model", "single_class", BRAIN.to_dict()):
        found = f"a {data['family']} {data['kind']} on label set {data['label_set'].get('name')!r}"
        raise BundleError(path, f"not a brain extractor: expected a single_class model on label set 'brain'. Received: {found}")
    if BRAIN_EXTRACTOR_KEY in data:
        raise BundleError(path, "a brain extractor cannot hold a brain extractor of its own")
    return path


def copy_brain_extractor(staging: Path, source: Path) -> dict[str, Any]:
    """Copy a checked extractor bundle into a staged segmenter bundle; return its ``bundle.json`` entry."""
    target = staging / BRAIN_EXTRACTOR_DIR
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True)
    verify_bundle(target)
    return {"path": BRAIN_EXTRACTOR_DIR, "sha256": sha256_file(target / MANIFEST)}


def attach_brain_extractor(bundle: str | os.PathLike[str], extractor: str | os.PathLike[str]) -> Path:
    """Put ``extractor`` into the segmenter ``bundle`` (replacing any it holds), atomically.

    The segmenter's networks and training record are kept; its ``bundle.json`` gains the
    ``brain_extractor`` entry and format version 2; the manifest is rewritten and the whole bundle
    verified before it is renamed into place.

    Raises:
        BundleError: either bundle fails verification, ``bundle`` is itself a brain extractor or an
            ensemble member, or ``extractor`` is not a brain extractor.
    """
    root = Path(bundle)
    source = check_brain_extractor_source(extractor)
    data = verify_bundle(root)
    if data["label_set"] == BRAIN.to_dict():
        raise BundleError(root, "is a brain-mask network itself: attach the extractor to a tissue segmenter bundle")
    if data["kind"] == "model" and data["family"] == "single_class":
        raise BundleError(root, "a lone single_class model is not a segmenter: attach the extractor to its ensemble bundle")
    with staged(root) as staging:
        shutil.copytree(root, staging, symlinks=True, dirs_exist_ok=True)
        description = json.loads((staging / BUNDLE_JSON).read_text(encoding="utf-8"))
        description[BRAIN_EXTRACTOR_KEY] = copy_brain_extractor(staging, source)
        description["format_version"] = FORMAT_VERSION
        (staging / BUNDLE_JSON).write_text(json.dumps(description, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        write_manifest(staging)
        verify_bundle(staging)
    logger.info("attached brain extractor %s to %s", source, root)
    return root
