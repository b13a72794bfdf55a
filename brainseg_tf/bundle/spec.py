"""The bundle format's names and constants (the input contract itself is `brainseg_tf.preprocessing.InputSpec`)."""

from __future__ import annotations

import re
from brainseg_tf.families import FAMILIES
from brainseg_tf.labels import class_slug
from brainseg_tf.preprocessing import INPUT_SPEC_KEYS

FORMAT_VERSION = 1
"""Bumped whenever a reader of the previous version could misread a new bundle."""

BUNDLE_JSON = "bundle.json"
MANIFEST = "manifest.sha256"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
MEMBERS_DIR = "members"
SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
LABELS_SIGNATURE = "labels"
"""A softmax network's second signature: ``image`` -> ``{LABELS_OUTPUT: uint8 class indices}``."""
LABELS_OUTPUT = "labels"

KINDS: tuple[str, ...] = ("model", "ensemble")

REQUIRED_KEYS: tuple[str, ...] = (
    "format_version",
    "kind",
    "family",
    "class_index",
    "label_set",
    "input_spec",
    "config",
    "metrics",
    "versions",
    "git_commit",
    "created",
)
"""Keys every bundle.json has; ensembles also have ``members``."""

__all__ = ["FAMILIES", "INPUT_SPEC_KEYS"]  # re-exported for the bundle's readers and writers

def member_name(class_name: str, class_index: int) -> str:
    """Folder name of an ensemble member: the class name slug, "gray matter" -> "gray_matter".

    Names without a letter or digit fall back to ``class_<index>``.
    """
    return class_slug(class_name) or f"class_{class_index}"


MEMBER_NAME_PATTERN = re.compile(r"^[0-9a-z_]+$")
