"""A bundle's SavedModel written again from its own ``model.keras``, by the current exporter.

For bundles trained before an exporter change (e.g. batch norm folding): the weights, the training
record in ``bundle.json`` and the ``.keras`` file stay as they are; ``saved_model/`` and the
manifests are rewritten (an ensemble's ``bundle.json`` also records its members' new manifest
sha256). The same checks as a fresh bundle: verified before loading, the new SavedModel compared
with the Keras model on a probe, the whole bundle staged and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from brainseg_tf.bundle.export import check_serving_matches, export_saved_model
from brainseg_tf.bundle.load import load_keras_model
from brainseg_tf.bundle.manifest import sha256_file, write_manifest
from brainseg_tf.bundle.spec import BUNDLE_JSON, MANIFEST, SAVED_MODEL_DIR
from brainseg_tf.bundle.staging import staged
from brainseg_tf.bundle.verify import verify_bundle
from brainseg_tf.preprocessing import InputSpec

logger = logging.getLogger(__name__)


def reexport_bundle(path: str | os.PathLike[str]) -> Path:
    """Rewrite the SavedModel of a model bundle, or of every member of an ensemble bundle.

    Raises:
        BundleError: the bundle (or a member) fails verification, its Keras file cannot be loaded
            safely, or the new SavedModel disagrees with it.
    """
    root = Path(path)
    kind = verify_bundle(root)["kind"]
    with staged(root) as staging:
        shutil.copytree(root, staging, symlinks=True, dirs_exist_ok=True)
        if kind == "model":
            _reexport_model(staging)
        else:
            description = json.loads((staging / BUNDLE_JSON).read_text(encoding="utf-8"))
            for member in description["members"]:
                _reexport_model(staging / member["path"])
                member["sha256"] = sha256_file(staging / member["path"] / MANIFEST)
            (staging / BUNDLE_JSON).write_text(json.dumps(description, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            write_manifest(staging)
            verify_bundle(staging)
    logger.info("re-exported the SavedModel(s) of %s", root)
    return root


def _reexport_model(folder: Path) -> None:
    model = load_keras_model(folder)  # verifies the manifest, bundle.json included, first
    description = json.loads((folder / BUNDLE_JSON).read_text(encoding="utf-8"))
    pad_multiple = InputSpec.from_dict(description["input_spec"]).pad_multiple
    shutil.rmtree(folder / SAVED_MODEL_DIR)
    export_saved_model(model, folder / SAVED_MODEL_DIR)
    check_serving_matches(folder, model, pad_multiple)
    write_manifest(folder)
    verify_bundle(folder)
