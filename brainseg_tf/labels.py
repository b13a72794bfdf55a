"""Label sets: stored label values (e.g. FreeSurfer aseg IDs) <-> contiguous class indices, names and colours."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from brainseg_tf.errors import LabelError

UnknownPolicy = Literal["error", "background"]
Rgb = tuple[int, int, int]


def _is_rgb(rgb: object) -> bool:
    """Whether ``rgb`` is three integers (not booleans) in [0, 255]."""
    if not isinstance(rgb, (tuple, list)) or len(rgb) != 3:
        return False
    return all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb)


def class_slug(name: str) -> str:
    """A class name as a file, folder or metric name: lower case, other characters as underscores.

    "gray matter" -> "gray_matter", "Left-Cerebral-Cortex" -> "left_cerebral_cortex".
    """
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class LabelSet:
    """Classes of a segmentation task. Class 0 is always background.

    Attributes:
        name: identifier stored in caches and bundles (``tissue``, ``aseg``, ``structures``).
        values: stored label value of each class, indexed by class.
        names: human-readable name of each class, indexed by class.
        lr_pairs: (left class, right class) pairs swapped by a left/right flip.
        colors: display colour (R, G, B, each 0-255) of each class, indexed by class; empty when
            the set has no colour table of its own.
    """

    name: str
    values: tuple[int, ...]
    names: tuple[str, ...]
    lr_pairs: tuple[tuple[int, int], ...] = field(default=())
    colors: tuple[Rgb, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.values) != len(self.names):
            raise LabelError(f"Label set {self.name!r}: {len(self.values)} values but {len(self.names)} names")
        if len(set(self.values)) != len(self.values):
            raise LabelError(f"Label set {self.name!r}: stored values repeat: {self.values}")
        if len(self.values) < 2 or self.values[0] != 0:
            raise LabelError(f"Label set {self.name!r}: expected background value 0 first and at least one class")
        lowered = [n.lower() for n in self.names]
        if len(set(lowered)) != len(lowered):
            raise LabelError(f"Label set {self.name!r}: class names repeat (case-insensitively): {self.names}")
        self._check_lr_pairs()
        self._check_colors()

    def _check_colors(self) -> None:
        if not len(self.colors):
            object.__setattr__(self, "colors", ())
            return
        if len(self.colors) != len(self.values):
            raise LabelError(
                f"Label set {self.name!r}: expected one colour per class ({len(self.values)}). Received: {len(self.colors)} colours"
            )
        for index, rgb in enumerate(self.colors):
            if not _is_rgb(rgb):
                raise LabelError(
                    f"Label set {self.name!r}: expected the colour of class {index} ({self.names[index]!r}) as three "
                    f"integers in [0, 255]. Received: {rgb!r}"
                )
        # Lists or numpy integers in, plain tuples of ints stored (so equality and JSON round trips hold).
        object.__setattr__(self, "colors", tuple(tuple(int(c) for c in rgb) for rgb in self.colors))

    def _check_lr_pairs(self) -> None:
        paired: list[int] = []
        for left, right in self.lr_pairs:
            if not (0 < left < len(self.values) and 0 < right < len(self.values)) or left == right:
                raise LabelError(
                    f"Label set {self.name!r}: left/right pair {(left, right)} is not two distinct foreground classes"
                )
            paired += [left, right]
        if len(set(paired)) != len(paired):
            raise LabelError(f"Label set {self.name!r}: a class is in more than one left/right pair: {self.lr_pairs}")

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.values)

    @property
    def foreground_classes(self) -> tuple[int, ...]:
        """Class indices other than background."""
        return tuple(range(1, self.num_classes))

    def class_index(self, name: str) -> int:
        """The class index of a class name (case-insensitive).

        Raises:
            LabelError: no class has that name.
        """
        lowered = [n.lower() for n in self.names]
        if name.lower() not in lowered:
            raise LabelError(f"Label set {self.name!r} has no class {name!r}. Expected one of: {', '.join(self.names)}")
        return lowered.index(name.lower())

    def to_classes(self, stored: np.ndarray, unknown: UnknownPolicy = "error") -> np.ndarray:
        """Map stored label values to class indices (uint8 when they fit, else int32).

        Args:
            stored: integer label map.
            unknown: ``error`` raises on values outside the set; ``background`` maps them to 0.

        Raises:
            LabelError: unknown values found and ``unknown == "error"``, or another ``unknown`` policy.
        """
        if unknown not in ("error", "background"):
            raise LabelError(f"Expected unknown='error' or 'background'. Received: unknown={unknown!r}")
        stored = np.asarray(stored)
        values = np.asarray(self.values, dtype=np.int64)
        order = np.argsort(values)
        sorted_values = values[order]
        position = np.clip(np.searchsorted(sorted_values, stored), 0, len(values) - 1)
        known = sorted_values[position] == stored
        if unknown == "error" and not known.all():
            strangers = np.unique(stored[~known])
            shown = ", ".join(str(v) for v in strangers[:10]) + (" ..." if strangers.size > 10 else "")
            raise LabelError(
                f"Label values not in label set {self.name!r}: {shown}. "
                "Map them in the label set, or set unknown_labels: background"
            )
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        classes = order[position].astype(dtype)
        classes[~known] = 0
        return classes

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """Map class indices back to stored label values (int32).

        Raises:
            LabelError: non-integer class indices, or indices outside [0, num_classes).
        """
        classes = np.asarray(classes)
        if not np.issubdtype(classes.dtype, np.integer):
            raise LabelError(f"Expected integer class indices for {self.name!r}. Received: dtype={classes.dtype}")
        if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise LabelError(
                f"Expected class indices in [0, {self.num_classes - 1}] for label set {self.name!r}. "
                f"Received: range [{classes.min()}, {classes.max()}]"
            )
        return np.asarray(self.values, dtype=np.int32)[classes]

    def lr_partners(self) -> dict[int, int]:
        """Each class of a left/right pair -> the other class of its pair (both directions)."""
        return {**{left: right for left, right in self.lr_pairs}, **{right: left for left, right in self.lr_pairs}}

    def flip_permutation(self) -> np.ndarray:
        """Class permutation applied to labels when the volume is mirrored left/right."""
        permutation = np.arange(self.num_classes)
        for left, right in self.lr_pairs:
            permutation[left], permutation[right] = right, left
        return permutation

    def to_dict(self) -> dict:
        """JSON-ready description (stored in caches and bundles).

        ``colors`` is written only when the set has colours, so the description of a set without
        them is what it was before colours existed (bundles compare these dicts).
        """
        data = {"name": self.name, "values": list(self.values), "names": list(self.names), "lr_pairs": [list(p) for p in self.lr_pairs]}
        if self.colors:
            data["colors"] = [list(rgb) for rgb in self.colors]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LabelSet:
        """Inverse of `to_dict`; a description without ``lr_pairs`` or ``colors`` gets none."""
        return cls(
            name=str(data["name"]),
            values=tuple(int(v) for v in data["values"]),
            names=tuple(str(n) for n in data["names"]),
            lr_pairs=tuple((int(a), int(b)) for a, b in data.get("lr_pairs", ())),
            colors=tuple(tuple(int(c) for c in rgb) for rgb in data.get("colors", ())),  # type: ignore[misc]
        )


TISSUE = LabelSet(
    name="tissue",
    values=(0, 1, 2, 3),
    names=("background", "CSF", "gray matter", "white matter"),
)

BRAIN = LabelSet(name="brain", values=(0, 1), names=("background", "brain"))
"""Brain extraction's targets: the brain (CSF, gray and white matter inside the meninges) against everything else."""

# FreeSurfer aseg IDs, names and colours (FreeSurferColorLUT.txt of FreeSurfer 7; FreeSurfer 6 names 10/49
# "Left-/Right-Thalamus-Proper", older tables colour 41 (0, 225, 0)): the structures SynthSeg-style tools segment.
_ASEG_STRUCTURES: tuple[tuple[int, str, Rgb], ...] = (
    (0, "Unknown", (0, 0, 0)),
    (2, "Left-Cerebral-White-Matter", (245, 245, 245)),
    (3, "Left-Cerebral-Cortex", (205, 62, 78)),
    (4, "Left-Lateral-Ventricle", (120, 18, 134)),
    (5, "Left-Inf-Lat-Vent", (196, 58, 250)),
    (7, "Left-Cerebellum-White-Matter", (220, 248, 164)),
    (8, "Left-Cerebellum-Cortex", (230, 148, 34)),
    (10, "Left-Thalamus", (0, 118, 14)),
    (11, "Left-Caudate", (122, 186, 220)),
    (12, "Left-Putamen", (236, 13, 176)),
    (13, "Left-Pallidum", (12, 48, 255)),
    (14, "3rd-Ventricle", (204, 182, 142)),
    (15, "4th-Ventricle", (42, 204, 164)),
    (16, "Brain-Stem", (119, 159, 176)),
    (17, "Left-Hippocampus", (220, 216, 20)),
    (18, "Left-Amygdala", (103, 255, 255)),
    (24, "CSF", (60, 60, 60)),
    (26, "Left-Accumbens-area", (255, 165, 0)),
    (28, "Left-VentralDC", (165, 42, 42)),
    (41, "Right-Cerebral-White-Matter", (245, 245, 245)),
    (42, "Right-Cerebral-Cortex", (205, 62, 78)),
    (43, "Right-Lateral-Ventricle", (120, 18, 134)),
    (44, "Right-Inf-Lat-Vent", (196, 58, 250)),
    (46, "Right-Cerebellum-White-Matter", (220, 248, 164)),
    (47, "Right-Cerebellum-Cortex", (230, 148, 34)),
    (49, "Right-Thalamus", (0, 118, 14)),
    (50, "Right-Caudate", (122, 186, 220)),
    (51, "Right-Putamen", (236, 13, 176)),
    (52, "Right-Pallidum", (13, 48, 255)),
    (53, "Right-Hippocampus", (220, 216, 20)),
    (54, "Right-Amygdala", (103, 255, 255)),
    (58, "Right-Accumbens-area", (255, 165, 0)),
    (60, "Right-VentralDC", (165, 42, 42)),
)


def _lr_pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    return tuple(
        (i, index["Right-" + n[len("Left-"):]]) for i, n in enumerate(names) if n.startswith("Left-") and "Right-" + n[len("Left-"):] in index
    )


_aseg_names = tuple(n for _, n, _ in _ASEG_STRUCTURES)
ASEG = LabelSet(
    name="aseg",
    values=tuple(v for v, _, _ in _ASEG_STRUCTURES),
    names=_aseg_names,
    lr_pairs=_lr_pairs(_aseg_names),
)
"""FreeSurfer's aseg structures, without colours: the name older caches and bundles store (kept as it was)."""

STRUCTURES = LabelSet(
    name="structures",
    values=ASEG.values,
    names=ASEG.names,
    lr_pairs=ASEG.lr_pairs,
    colors=tuple(rgb for _, _, rgb in _ASEG_STRUCTURES),
)
"""Anatomical structures (issue #17): the classes of `ASEG` with FreeSurfer's colour table.

Cerebral cortex is one class per hemisphere (cortical parcels merged); how FreeSurfer's other
aparc+aseg labels map here is `brainseg_tf.datasets.freesurfer_atlas.MAPPING_RULES` (docs/structures.md).
"""

LABEL_SETS: dict[str, LabelSet] = {TISSUE.name: TISSUE, BRAIN.name: BRAIN, ASEG.name: ASEG, STRUCTURES.name: STRUCTURES}


def get_label_set(name: str) -> LabelSet:
    """A shipped label set by name.

    Raises:
        LabelError: unknown name.
    """
    if name not in LABEL_SETS:
        raise LabelError(f"Expected a label set in {sorted(LABEL_SETS)}. Received: {name!r}")
    return LABEL_SETS[name]
