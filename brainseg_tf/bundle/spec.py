"""The bundle format's names and constants, and the input contract derived from a `Config`."""

from __future__ import annotations

import re
from typing import Any

from brainseg_tf.config import Config
from brainseg_tf.labels import class_slug

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
FAMILIES: tuple[str, ...] = ("multiclass", "single_class")  # as brainseg_tf.models, without importing keras

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

INPUT_SPEC_KEYS: tuple[str, ...] = (
    "orientation",
    "voxel_size",
    "lower_percentile",
    "upper_percentile",
    "mode",
    "slice_axis",
    "context",
    "channels",
    "pad_multiple",
    "patch_shape",
    "context_padding",
)


def input_spec_from_config(config: Config) -> dict[str, Any]:
    """How inference must prepare a network's input, from the config it was trained with.

    Volumes are conformed to RAS+ at ``voxel_size`` and clipped/scaled between the percentiles.
    In ``slices`` mode, ``2 * context + 1`` neighbouring slices along ``slice_axis`` are stacked as
    channels (low to high index, zeros beyond the volume); in ``patches`` mode a single channel is
    cut in ``patch_shape`` patches. Spatial sizes are padded to a multiple of ``pad_multiple``.

    Args:
        config: the effective training config.

    Returns:
        A JSON-ready dict with the keys of `INPUT_SPEC_KEYS`.
    """
    generator = config.generator
    slices = generator.mode == "slices"
    return {
        "orientation": "RAS",
        "voxel_size": float(config.preprocess.voxel_size),
        "lower_percentile": float(config.preprocess.lower_percentile),
        "upper_percentile": float(config.preprocess.upper_percentile),
        "mode": generator.mode,
        "slice_axis": int(generator.slice_axis) if slices else None,
        "context": int(generator.context) if slices else None,
        "channels": int(generator.channels),
        "pad_multiple": int(2**config.model.depth),
        "patch_shape": None if slices else [int(s) for s in generator.patch_shape],
        "context_padding": "zeros",
    }


def member_name(class_name: str, class_index: int) -> str:
    """Folder name of an ensemble member: the class name slug, "gray matter" -> "gray_matter".

    Names without a letter or digit fall back to ``class_<index>``.
    """
    return class_slug(class_name) or f"class_{class_index}"


MEMBER_NAME_PATTERN = re.compile(r"^[0-9a-z_]+$")
