"""The bundle format's names and constants (the input contract itself is `brainseg_tf.preprocessing.InputSpec`)."""

from __future__ import annotations

import re
from brainseg_tf.families import FAMILIES
from brainseg_tf.labels import class_slug
from brainseg_tf.preprocessing import INPUT_SPEC_KEYS

FORMAT_VERSION = 3
"""Bumped whenever a reader of the previous version could misread a new bundle: version 2 adds the
optional brain extractor, which a version-1 reader would silently skip (segmenting a full head as if
it were skull-stripped); version 3 adds mirrored ensemble members (`MIRRORED_CLASS_KEY`), whose second
class a version-2 reader would silently skip (no right-side structures)."""
READABLE_FORMAT_VERSIONS: tuple[int, ...] = (1, 2, 3)
"""Versions this reader accepts: 1 is 2 without a brain extractor, 2 is 3 without mirrored members."""
REGION_KEY = "region_mm"
"""Optional key of an ensemble's member entry (version 3): the box of the atlas (world mm, `brainseg_tf.regions.Region`)
its class lies in; the member reads only that box, carried onto the subject by brain moments. Needs `ATLAS_FRAME_KEY`."""
ATLAS_FRAME_KEY = "atlas_frame"
"""Optional key of an ensemble's bundle.json (version 3): the atlas brain's moments the member regions are carried by."""
MIRRORED_CLASS_KEY = "mirrored_class_index"
"""Optional key of an ensemble's member entry (version 3): the member also segments the left/right partner of its
class (`LabelSet.lr_pairs`), on the left/right mirror of the volume, its output mirrored back."""

BUNDLE_JSON = "bundle.json"
MANIFEST = "manifest.sha256"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
MEMBERS_DIR = "members"
BRAIN_EXTRACTOR_DIR = "brain_extractor"
"""A segmenter bundle's optional brain-extraction network: a complete single_class model bundle on the
``brain`` label set, run before the tissue networks (``bundle.json``: ``brain_extractor: {path, sha256}``)."""
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
"""Keys every bundle.json has; ensembles also have ``members``; segmenters may have ``brain_extractor`` (version 2)."""

__all__ = ["FAMILIES", "INPUT_SPEC_KEYS"]  # re-exported for the bundle's readers and writers

def member_name(class_name: str, class_index: int) -> str:
    """Folder name of an ensemble member: the class name slug, "gray matter" -> "gray_matter".

    Names without a letter or digit fall back to ``class_<index>``.
    """
    return class_slug(class_name) or f"class_{class_index}"


MEMBER_NAME_PATTERN = re.compile(r"^[0-9a-z_]+$")
