"""Procedural full heads around brain label maps: meninges, skull, scalp, face, orbits, sinuses, jaw and neck.

Our networks have only seen skull-stripped brains, while a clinical T1 shows a whole head. No full-head
label map ships offline, so `build_head` grows the extra-cerebral anatomy around a brain label map of
``TISSUE`` values, in the spirit of SynthSeg and SynthStrip: training images are later synthesised from
the head label map (random intensities per label), and trained against `head_to_tissue` (brain classes
kept, everything else background) or `head_brain_mask`.

Geometry: arrays are indexed (i, j, k) on RAS+ grids (axis 0 towards the subject's Right, 1 Anterior,
2 Superior); affines map voxels to world millimetres. The head comes back on the brain's grid grown by
whole voxels (inferiorly for the neck, anteriorly for the face, wherever else the head needs room), so
every brain voxel keeps its label at the same world point.

Recipe, every draw from the caller's generator in a fixed order (one generator state, one head):

1. Frame: the brain's bounding box gives a scale ``s`` (its size relative to the adult MNI152 brain,
   142 x 180 mm) and anchors. Parts are written in adult MNI152 millimetres (`_FACE_ENVELOPE`,
   `_NECK_ENVELOPE`, `_FACE`, `_NECK`, `_spine`) and placed in one of three groups: "skull" parts (frontal
   and sphenoid sinuses, clivus, petrous bones, ears) follow the brain (scale ``s``); "face" parts hang below the
   frontal lobe (scale ``s`` times a random face scale), shifted so the eyes clear it by the mean skull
   thickness; "neck" parts start at the lowest brain voxels (the brain stem) and bend by a random pitch.
2. Envelope: face, nose, lips, chin, ears, the block below the skull base, parotids, sternocleidomastoids
   and the neck (a thick tube along the spine): superellipsoids warped by a smooth random field, and tubes.
3. Cranium: layers by exact Euclidean distance from the brain in mm: extra-cerebral CSF, dura, inner
   table, diploe, outer table, temporal muscle (over the temporal fossae only), scalp. Each thickness is
   ``thickness_scale * (low + (high - low) * u)``, u in [0, 1] a field interpolated linearly between
   random control values every ``thickness_smoothness_mm`` (a head-wide level per layer, +-
   `THICKNESS_VARIATION` around it), so every thickness stays in its range and varies around the head.
   The three bone layers together, and the skin, are at least one voxel thick: closed at any voxel size.
4. Deep parts (eyes, orbits, optic nerves, sinuses, nasal cavity, facial bones, jaw, teeth, tongue,
   airway, vertebrae and discs, spinal canal and cord, vessels, fat pads), each with a random presence,
   size, position and surface warp; painted only inside the head, never over the brain, and, except
   for the optic nerves, spinal canal, skull-base bones and sinuses, never over the cranial layers.
5. Skin and subcutaneous fat: layers by distance from the air outside the head.

`build_cranium` paints step 3 alone, within a few mm of the brain: all a head that is to be skull-stripped
needs (`brainseg_tf.datasets.synthetic_heads`), about ten times faster at 1 mm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainseg_tf.config import HeadConfig
from brainseg_tf.errors import ConfigError, LabelError
from brainseg_tf.geometry import VOXEL_SIZE_TOLERANCE
from brainseg_tf.io import LabelMap
from brainseg_tf.labels import TISSUE, LabelSet

logger = logging.getLogger(__name__)

HEAD_LABELS: tuple[tuple[int, str], ...] = (
    (0, "air"),  # outside the head
    (1, "CSF"),  # the brain label map's CSF: ventricles and sulci
    (2, "gray matter"),
    (3, "white matter"),
    (4, "extra-cerebral CSF"),  # subarachnoid CSF between brain and dura: not brain
    (5, "dura"),
    (6, "skull inner table"),
    (7, "skull diploe"),
    (8, "skull outer table"),
    (9, "subcutaneous fat"),  # scalp, face and neck
    (10, "skin"),
    (11, "masticatory muscle"),  # temporalis, masseter, pterygoids
    (12, "eye"),  # globes
    (13, "orbital fat"),
    (14, "optic nerve"),
    (15, "sinus air"),  # frontal, ethmoid, sphenoid, maxillary sinuses, mastoid cells
    (16, "nasal cavity"),
    (17, "facial and skull-base bone"),  # maxilla, zygoma, orbital walls, septum, sinus walls, clivus, petrous
    (18, "mandible"),
    (19, "teeth"),
    (20, "tongue and soft palate"),
    (21, "airway"),  # pharynx, larynx, trachea, air in the mouth
    (22, "vertebra"),
    (23, "intervertebral disc"),
    (24, "spinal cord"),
    (25, "spinal CSF"),
    (26, "neck muscle"),
    (27, "deep fat"),  # neck fat pads, parapharyngeal and buccal fat
    (28, "facial soft tissue"),  # face, nose, lips, ears, turbinates
    (29, "vessel"),  # carotid arteries, jugular veins
)
"""Generation labels of a head label map, (value, name): values 0-3 are the ``TISSUE`` values."""

HEAD = LabelSet(name="head", values=tuple(v for v, _ in HEAD_LABELS), names=tuple(n for _, n in HEAD_LABELS))
"""The generation labels as a label set (value == class index), e.g. for pictures."""

(AIR, BRAIN_CSF, GRAY_MATTER, WHITE_MATTER, EXTRACEREBRAL_CSF, DURA, INNER_TABLE, DIPLOE, OUTER_TABLE,
 SUBCUTANEOUS_FAT, SKIN, MASTICATORY_MUSCLE, EYE, ORBITAL_FAT, OPTIC_NERVE, SINUS_AIR, NASAL_CAVITY,
 FACIAL_BONE, MANDIBLE, TEETH, TONGUE, AIRWAY, VERTEBRA, DISC, SPINAL_CORD, SPINAL_CSF, NECK_MUSCLE,
 DEEP_FAT, FACIAL_SOFT_TISSUE, VESSEL) = range(len(HEAD_LABELS))  # fmt: skip
BRAIN_LABELS = (BRAIN_CSF, GRAY_MATTER, WHITE_MATTER)
"""The labels `head_brain_mask` calls brain; extra-cerebral and spinal CSF are not (reference masks are tight)."""
THICKNESS_VARIATION = 0.35
"""How far (in units of a layer's range) control values stray from the layer's head-wide level."""

_LAYERS = ("extracerebral_csf_mm", "dura_mm", "inner_table_mm", "diploe_mm", "outer_table_mm", "temporal_muscle_mm")
_SURFACE = ("scalp_fat_mm", "skin_mm")  # channels 6, 7 of the thickness fields
_RANGES = (*_LAYERS, *_SURFACE)

_MNI_ANCHOR = np.array([0.0, 73.0, 81.0])  # MNI152 brain: midline, frontal pole (y), top (z)
_MNI_FORAMEN = np.array([0.0, -45.0, -71.0])  # MNI152 brain: centre of its lowest voxels (brain stem)
_MNI_SIZE = np.array([142.0, 180.0])  # MNI152 brain width (x) and length (y), mm
_FACE_PIVOT = np.array([0.0, 45.0, -30.0])  # anterior skull base: the face scales about it
_EYE = np.array([32.0, 56.0, -40.0])  # right globe centre (adult, MNI-sized)
_EYE_RADIUS = 12.0
_CHIN = np.array([0.0, 72.0, -168.0])  # soft-tissue menton
_PITCH_RAMP_MM = 60.0  # the neck pitch grows from 0 at the foramen to full this far below it


_BRAIN = frozenset(BRAIN_LABELS)  # protected label sets: a part never paints over them
_CRANIAL = _BRAIN | {EXTRACEREBRAL_CSF, DURA}
_SKULL = _CRANIAL | {INNER_TABLE, DIPLOE, OUTER_TABLE}
_ENVELOPE = _SKULL  # may paint air: it makes the head
_DEEP = _SKULL | {AIR}  # inside the head, outside the cranial layers
_SKULL_BASE = _CRANIAL | {AIR}  # may replace skull layers (they are bone or air cells in bone)
_FRONTAL = _CRANIAL | {INNER_TABLE, AIR}
_NERVE = _BRAIN | {AIR}  # through the skull, up to the brain


@dataclass(frozen=True)
class _Blob:
    """A superellipsoid part in canonical (adult MNI-sized, mm) coordinates, right-hand copy for pairs."""

    label: int
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    group: str = "face"  # "face": hangs below the frontal lobe; "skull": follows the brain; "neck": the spine and its pitch
    mirror: bool = False  # a left/right pair: also painted at x -> -x
    probability: float = 1.0
    protect: frozenset[int] = _DEEP  # labels left alone
    exponents: tuple[float, float] = (2.0, 2.0)  # in-plane and vertical superquadric exponents (2: ellipsoid)
    tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # rotations about x, y, z
    wall: tuple[int, float] | None = None  # (label, mm): a shell painted first, e.g. bone around a sinus
    jitter: float = 1.0  # multiplies the configured position, size and warp randomness


@dataclass(frozen=True)
class _Tube:
    """A tube of constant radius along a polyline in canonical coordinates (cross-section scaled by ``stretch``)."""

    label: int
    points: tuple[tuple[float, float, float], ...]
    radius: float
    group: str = "face"
    mirror: bool = False
    probability: float = 1.0
    protect: frozenset[int] = _DEEP
    stretch: tuple[float, float, float] = (1.0, 1.0, 1.0)
    jitter: float = 1.0


def _arch(y_front: float, z: float, half_width: float, depth: float) -> tuple[tuple[float, float, float], ...]:
    """Points of a horseshoe in an axial plane, left back -> front -> right back (dental arches, mandible)."""
    angles = np.linspace(-np.pi / 2, np.pi / 2, 7)
    return tuple((float(half_width * np.sin(a)), float(y_front - depth * (1 - np.cos(a))), z) for a in angles)


_FACE_ENVELOPE: tuple[_Blob, ...] = (
    _Blob(FACIAL_SOFT_TISSUE, (0, 40, -60), (68, 46, 40), protect=_ENVELOPE, exponents=(2.3, 2.3)),  # upper face
    _Blob(FACIAL_SOFT_TISSUE, (0, 38, -126), (54, 48, 44), protect=_ENVELOPE, exponents=(2.3, 2.3)),  # lower face
    _Blob(FACIAL_SOFT_TISSUE, (0, 86, -62), (9, 12, 25), protect=_ENVELOPE, tilt_deg=(28, 0, 0)),  # nose
    _Blob(FACIAL_SOFT_TISSUE, (0, 80, -116), (24, 8, 14), protect=_ENVELOPE),  # lips
    _Blob(FACIAL_SOFT_TISSUE, (0, 72, -150), (22, 12, 16), protect=_ENVELOPE),  # chin
    _Blob(FACIAL_SOFT_TISSUE, (0, 18, -150), (44, 40, 22), protect=_ENVELOPE),  # floor of the mouth, down to the neck
    _Blob(FACIAL_SOFT_TISSUE, (80, -20, -45), (5, 14, 27), "skull", protect=_ENVELOPE, mirror=True),  # ears
)
_NECK_ENVELOPE: tuple[_Blob | _Tube, ...] = (
    _Tube(NECK_MUSCLE, ((0, -42, -62), (0, -38, -120), (0, -35, -180), (0, -34, -400)), 55.0, "neck", protect=_ENVELOPE,
          stretch=(1.06, 0.96, 1.0), jitter=0.5),  # the neck
    _Blob(NECK_MUSCLE, (0, -76, -64), (50, 30, 32), "neck", protect=_ENVELOPE),  # nape muscles on the occiput
    _Blob(NECK_MUSCLE, (0, -2, -90), (52, 38, 38), "skull", protect=_ENVELOPE, exponents=(2.5, 2.5)),  # below the skull base
    _Blob(DEEP_FAT, (46, -10, -88), (12, 18, 24), "neck", mirror=True, protect=_ENVELOPE),  # parotid glands
    _Tube(NECK_MUSCLE, ((52, -30, -55), (46, -12, -120), (24, 14, -200), (10, 24, -260)), 9.0, "neck", mirror=True,
          protect=_ENVELOPE),  # sternocleidomastoids: mastoid to sternum
)
_FACE: tuple[_Blob | _Tube, ...] = (
    _Blob(DEEP_FAT, (42, 45, -100), (9, 14, 14), mirror=True),  # buccal fat pads
    _Blob(MASTICATORY_MUSCLE, (50, 8, -108), (8, 18, 34), mirror=True),  # masseters
    _Blob(MASTICATORY_MUSCLE, (34, 4, -100), (6, 12, 22), mirror=True),  # pterygoids
    _Blob(FACIAL_BONE, (0, 52, -68), (32, 25, 20), exponents=(2.6, 2.6)),  # maxilla and hard palate
    _Blob(FACIAL_BONE, (44, 48, -50), (10, 12, 12), mirror=True),  # zygomas
    _Tube(FACIAL_BONE, ((46, 44, -54), (58, 10, -52), (56, -12, -50)), 3.0, mirror=True),  # zygomatic arches
    _Tube(FACIAL_BONE, ((0, 8, -38), (0, -26, -66)), 6.0, "skull", protect=_SKULL_BASE, jitter=0.3),  # clivus
    _Tube(FACIAL_BONE, ((18, -8, -42), (48, -30, -48)), 7.0, "skull", mirror=True, protect=_SKULL_BASE, jitter=0.3),  # petrous
    _Blob(SINUS_AIR, (50, -32, -50), (7, 9, 9), "skull", mirror=True, probability=0.8, protect=_SKULL_BASE),  # mastoid
    _Blob(ORBITAL_FAT, (28, 44, -40), (13.5, 22, 14.5), mirror=True, tilt_deg=(0, 0, -15), wall=(FACIAL_BONE, 2.5)),
    _Tube(OPTIC_NERVE, ((31, 44, -40), (16, 22, -35), (9, 10, -31)), 2.5, mirror=True, protect=_NERVE, jitter=0.3),
    _Blob(EYE, (32, 56, -40), (12, 12, 12), mirror=True, jitter=0.5),
    _Blob(SINUS_AIR, (0, 75, -6), (14, 6, 12), "skull", probability=0.9, protect=_FRONTAL, wall=(FACIAL_BONE, 1.5)),  # frontal
    _Blob(SINUS_AIR, (0, 44, -38), (8, 16, 10), wall=(FACIAL_BONE, 1.5)),  # ethmoid cells
    _Blob(SINUS_AIR, (0, 16, -46), (11, 10, 9), "skull", probability=0.95, protect=_SKULL_BASE, wall=(FACIAL_BONE, 2.5)),  # sphenoid
    _Blob(NASAL_CAVITY, (0, 54, -62), (12, 30, 24), exponents=(2.5, 2.5), tilt_deg=(20, 0, 0)),  # top posterior
    _Blob(FACIAL_BONE, (0, 58, -62), (1.2, 26, 20), exponents=(4.0, 4.0), jitter=0.3),  # septum
    _Blob(FACIAL_SOFT_TISSUE, (9, 55, -72), (4, 22, 5), mirror=True, jitter=0.5),  # inferior turbinates
    _Blob(SINUS_AIR, (24, 52, -64), (12, 15, 15), mirror=True, probability=0.97, wall=(FACIAL_BONE, 2.0)),  # maxillary
    _Blob(TONGUE, (0, 35, -112), (20, 28, 18)),
    _Tube(TONGUE, ((0, 24, -86), (0, 12, -100)), 4.0),  # soft palate
    _Blob(AIRWAY, (0, 55, -112), (14, 12, 3), probability=0.4),  # air in the mouth
    _Tube(TEETH, _arch(68, -100, 21, 48), 4.5, probability=0.9, stretch=(1, 1, 2.2), jitter=0.5),
    _Tube(TEETH, _arch(65, -121, 20, 46), 4.5, probability=0.9, stretch=(1, 1, 2.2), jitter=0.5),
    _Tube(MANDIBLE, _arch(76, -145, 46, 78), 6.0, stretch=(1, 1, 2.8), jitter=0.5),  # body
    _Blob(MANDIBLE, (47, -4, -108), (4, 13, 38), mirror=True, tilt_deg=(-10, 0, 0)),  # rami
    _Tube(AIRWAY, ((0, 22, -70), (0, 4, -88), (0, -6, -112)), 7.0, jitter=0.3),  # naso- and oropharynx
)
_NECK: tuple[_Blob | _Tube, ...] = (
    _Blob(DEEP_FAT, (40, -42, -150), (10, 14, 30), "neck", mirror=True),  # posterior triangle fat
    _Blob(DEEP_FAT, (18, 6, -98), (6, 8, 12), "neck", mirror=True),  # parapharyngeal fat
    _Tube(VESSEL, ((20, -2, -78), (22, 8, -330)), 3.2, "neck", mirror=True, jitter=0.5),  # carotid arteries
    _Tube(VESSEL, ((27, -10, -76), (28, 2, -330)), 4.5, "neck", mirror=True, jitter=0.5),  # jugular veins
    _Tube(AIRWAY, ((0, -6, -112), (0, -4, -140), (0, 4, -170), (0, 8, -210), (0, 10, -330)), 7.0, "neck", jitter=0.3),
)


def _cord_y(z: float) -> float:
    """Canonical y of the spinal cord at height z: a gentle cervical lordosis below the foramen."""
    return float(_MNI_FORAMEN[1] + 6.0 * np.sin(np.pi * np.clip((_MNI_FORAMEN[2] - z) / 150.0, 0.0, 1.0)))


def _spine(bottom_z: float) -> list[_Blob | _Tube]:
    """Vertebrae (bodies, discs, arches, spinous and transverse processes), canal and cord down to ``bottom_z``."""
    parts: list[_Blob | _Tube] = []
    for level, z in enumerate(np.arange(-86.0, bottom_z - 17.0, -17.0)):
        y = _cord_y(z)
        body = (9, 4, 5) if level == 0 else (11, 8.5, 6.5)  # C1 has an anterior arch, not a body
        parts += [
            _Blob(VERTEBRA, (0, y + 17 + (level == 0) * 2, z), body, "neck", exponents=(2.4, 3.0), jitter=0.2),
            _Tube(VERTEBRA, ((-10, y + 2, z), (-8, y - 7, z), (0, y - 11, z), (8, y - 7, z), (10, y + 2, z)), 2.5, "neck", jitter=0.2),
            _Blob(VERTEBRA, (0, y - 20, z - 3), (3, 9, 4), "neck", jitter=0.2),
            _Blob(VERTEBRA, (20, y + 4, z), (7, 5, 5), "neck", mirror=True, jitter=0.2),
        ]
        if level > 0:
            parts.append(_Blob(DISC, (0, y + 17, z - 8.5), (10, 8, 1.8), "neck", exponents=(2.4, 3.0), jitter=0.2))
    cord = tuple((0.0, _cord_y(z), float(z)) for z in np.arange(_MNI_FORAMEN[2], bottom_z - 20.0, -10.0))
    parts.append(_Tube(SPINAL_CSF, cord, 8.0, "neck", protect=_NERVE, jitter=0.0))
    parts.append(_Tube(SPINAL_CORD, cord, 4.5, "neck", protect=_NERVE, jitter=0.0))
    return parts


def head_to_tissue(labels: np.ndarray | LabelMap) -> np.ndarray | LabelMap:
    """Training targets of a head label map: stored ``TISSUE`` values (0 background, 1 CSF, 2 GM, 3 WM).

    The brain's own labels are kept; every other label (extra-cerebral and spinal CSF included) becomes
    background 0.

    Args:
        labels: head label map (values of `HEAD_LABELS`), an array or a `LabelMap`.

    Returns:
        uint8 array of the same shape, or a `LabelMap` on the same grid when given one.

    Raises:
        LabelError: non-integer labels, or values outside `HEAD_LABELS`.
    """
    if isinstance(labels, LabelMap):
        return labels.with_array(head_to_tissue(labels.array))
    array = _checked_head_labels(labels)
    return np.where(array <= WHITE_MATTER, array, AIR).astype(np.uint8)


def head_brain_mask(labels: np.ndarray) -> np.ndarray:
    """Binary brain mask of a head label map: CSF, gray and white matter of the brain label map (`BRAIN_LABELS`).

    Extra-cerebral CSF (and dura, spinal CSF, cord) is NOT brain: the reference masks are tight.

    Raises:
        LabelError: non-integer labels, or values outside `HEAD_LABELS`.
    """
    array = _checked_head_labels(labels.array if isinstance(labels, LabelMap) else labels)
    return (array >= BRAIN_CSF) & (array <= WHITE_MATTER)


def build_head(brain: LabelMap, rng: np.random.Generator, config: HeadConfig | None = None) -> LabelMap:
    """Grow a random full head (labels of `HEAD_LABELS`) around a brain label map; see the module's recipe.

    Args:
        brain: stored ``TISSUE`` values (0 background, 1 CSF, 2 GM, 3 WM) on an isotropic RAS+ grid,
            arrays indexed (i, j, k), of any voxel size (e.g. 1 or 2 mm) and any brain size (a child's
            brain scaled down gets a proportionally smaller face; set ``config.thickness_scale`` too).
        rng: the only source of randomness: the same generator state gives the same head.
        config: thickness ranges and shape randomness (``HeadConfig()`` when None).

    Returns:
        uint8 head labels on the brain's grid grown by whole voxels (the affine is the brain's,
        shifted by the added voxels), so brain voxels keep their labels at the same world points.

    Raises:
        TypeError: ``brain`` not a `LabelMap`, ``rng`` not a numpy Generator, or ``config`` not a `HeadConfig`.
        ValueError: not 3D, not RAS+, non-isotropic voxels, or no brain voxel.
        LabelError: non-integer labels or values outside ``TISSUE``.
        ConfigError: a `HeadConfig` value out of range.
    """
    voxel = _check_brain(brain)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"Expected rng as a numpy.random.Generator (np.random.default_rng(seed)). Received: {type(rng).__name__}")
    config = HeadConfig() if config is None else config
    _check_config(config)
    points = _voxel_points(brain.affine, brain.array > 0)
    plan = _plan(points, voxel, rng, config)
    labels, affine = _grown(brain, plan.low, plan.high)
    fields = _Fields.random(rng, plan.levels, labels.shape, config.thickness_smoothness_mm / voxel)
    thickness = _Thickness(fields, plan.frame, affine, voxel, config)
    for shape in plan.envelope:
        shape.paint(labels, affine)
    _paint_cranium(labels, thickness, plan.reach)
    skin = _paint_subcutaneous(labels, thickness, plan.surface_reach)
    for shape in plan.deep:
        shape.paint(labels, affine)
    labels[skin] = SKIN
    logger.debug("head %s at %.2f mm around %d brain voxels", labels.shape, voxel, points.shape[1])
    return LabelMap(labels, affine)


def build_cranium(brain: LabelMap, rng: np.random.Generator, config: HeadConfig | None = None, reach_mm: float = 16.0) -> LabelMap:
    """The brain and the cranial layers within ``reach_mm`` of it, as `build_head` paints them (step 3 of the
    recipe: extra-cerebral CSF, dura, tables and diploe, temporal muscle, then scalp fat), without the face,
    neck, deep parts or skin; the rest of the canvas is air.

    What a skull-stripping tool can keep of a head lies a few mm from the brain, so a head that is to be
    stripped needs no more, at a fraction of `build_head`'s cost (the canvas is the brain's box grown by
    ``reach_mm``, and there is one distance transform). Draws follow `build_head`'s order up to the
    thickness fields.

    Raises:
        TypeError, ValueError, LabelError, ConfigError: as `build_head`; ValueError also for ``reach_mm`` <= 0.
    """
    voxel = _check_brain(brain)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"Expected rng as a numpy.random.Generator (np.random.default_rng(seed)). Received: {type(rng).__name__}")
    if not (np.isfinite(reach_mm) and reach_mm > 0):
        raise ValueError(f"Expected reach_mm > 0. Received: reach_mm={reach_mm!r}")
    config = HeadConfig() if config is None else config
    _check_config(config)
    points = _voxel_points(brain.affine, brain.array > 0)
    frame = _draw_frame(points, rng, config)
    levels = _Fields.random_levels(rng)
    margin = float(reach_mm) + 2 * voxel
    labels, affine = _grown(brain, points.min(axis=1) - margin, points.max(axis=1) + margin)
    fields_ = _Fields.random(rng, levels, labels.shape, config.thickness_smoothness_mm / voxel)
    _paint_cranium(labels, _Thickness(fields_, frame, affine, voxel, config), float(reach_mm))
    logger.debug("cranium %s at %.2f mm within %.1f mm of %d brain voxels", labels.shape, voxel, reach_mm, points.shape[1])
    return LabelMap(labels, affine)


# --- validation -------------------------------------------------------------------------------------


def _checked_head_labels(labels: np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if not np.issubdtype(array.dtype, np.integer):
        raise LabelError(f"Expected integer head labels. Received: dtype={array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= len(HEAD_LABELS)):
        raise LabelError(f"Expected head labels in [0, {len(HEAD_LABELS) - 1}]. Received: range [{array.min()}, {array.max()}]")
    return array


def _check_brain(brain: LabelMap) -> float:
    """Validate the brain label map; return its voxel size in mm."""
    if not isinstance(brain, LabelMap):
        raise TypeError(f"Expected brain as a brainseg_tf.io.LabelMap of TISSUE values. Received: {type(brain).__name__}")
    array = brain.array
    if array.ndim != 3:
        raise ValueError(f"Expected a 3D brain label map. Received: shape={array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise LabelError(f"Expected integer TISSUE values in the brain label map. Received: dtype={array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > max(TISSUE.values):
        raise LabelError(f"Expected brain labels among the TISSUE values {TISSUE.values}. Received: range [{low}, {high}]")
    if high == 0:
        raise ValueError("Expected brain voxels (TISSUE values 1-3). Received: an all-background label map")
    axcodes = nib.aff2axcodes(brain.affine)
    if axcodes != ("R", "A", "S"):
        raise ValueError(f"Expected a RAS+ brain label map (brainseg_tf.geometry.conform). Received: axes {''.join(axcodes)}")
    sizes = brain.voxel_size
    if np.ptp(sizes) > VOXEL_SIZE_TOLERANCE:
        raise ValueError(f"Expected isotropic voxels. Received: voxel size {tuple(np.round(sizes, 4))} mm")
    return float(sizes.mean())


def _check_config(config: HeadConfig) -> None:
    """Raise ConfigError naming the first `HeadConfig` value out of range."""
    if not isinstance(config, HeadConfig):
        raise TypeError(f"Expected config as a brainseg_tf.config.HeadConfig. Received: {type(config).__name__}")
    scalars = {
        "thickness_scale": ("> 0", lambda v: v > 0),
        "thickness_smoothness_mm": ("> 0", lambda v: v > 0),
        "position_jitter_mm": (">= 0", lambda v: v >= 0),
        "size_jitter": ("in [0, 1)", lambda v: 0 <= v < 1),
        "shape_warp": ("in [0, 0.4]", lambda v: 0 <= v <= 0.4),
        "neck_pitch_deg": ("in [0, 45]", lambda v: 0 <= v <= 45),
        "neck_length_mm": (">= 0", lambda v: v >= 0),
        "stripped_probability": ("in [0, 1]", lambda v: 0 <= v <= 1),
        "brain_aspect_jitter": ("in [0, 0.5]", lambda v: 0 <= v <= 0.5),
        "brain_scale_probability": ("in [0, 1]", lambda v: 0 <= v <= 1),
        "tissue_split_probability": ("in [0, 1]", lambda v: 0 <= v <= 1),
        "tissue_parts": ("an integer in [1, 8]", lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8),
    }
    for item in fields(config):
        value = getattr(config, item.name)
        if item.name == "child_layers":
            if not isinstance(value, bool):
                raise ConfigError(f"Expected generator.heads.child_layers as true/false. Received: {value!r}")
            continue
        if item.name == "anatomy":
            if value not in ("full", "cranium"):
                raise ConfigError(f"Expected generator.heads.anatomy 'full' or 'cranium'. Received: {value!r}")
            continue
        if item.name in scalars:
            expected, accepts = scalars[item.name]
            ok = isinstance(value, (int, float)) and np.isfinite(value) and accepts(value)
        else:
            positive = item.name in _POSITIVE_RANGES
            expected = "(low, high) with 0 < low <= high" if positive else "(low, high) with 0 <= low <= high"
            ok = _is_range(value, strictly_positive=positive)
        if not ok:
            raise ConfigError(f"Expected generator.heads.{item.name} {expected}. Received: {value!r}")


_POSITIVE_RANGES = frozenset({"face_scale", "brain_scale", "tissue_part_spacing_mm", "layer_scale"})


def _is_range(value: object, strictly_positive: bool) -> bool:
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
        return False
    low, high = value
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 if strictly_positive else low >= 0) and low <= high)


# --- frame: where the face and neck go ---------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Maps canonical (adult MNI-sized) part coordinates to the brain's world mm.

    Attributes:
        anchor: world point of `_MNI_ANCHOR` (brain midline, frontal pole, top).
        foramen: world point of `_MNI_FORAMEN` (centre of the lowest brain voxels).
        brain_scale: the brain's size relative to the MNI152 brain.
        scale: mm per canonical mm of the parts: brain_scale times the random face scale.
        face_shift: vertical shift of the face parts (mm), so the eyes clear the frontal lobe.
        pitch: neck flexion in radians, reached `_PITCH_RAMP_MM` below the foramen.
    """

    anchor: np.ndarray
    foramen: np.ndarray
    brain_scale: float
    scale: float
    face_shift: float
    pitch: float


def _place(group: str, point: Sequence[float], frame: _Frame) -> tuple[np.ndarray, float]:
    """(world point, neck pitch there in radians) of a canonical point of a face or neck part."""
    p = np.asarray(point, dtype=np.float64)
    if group == "skull":
        return frame.anchor + frame.brain_scale * (p - _MNI_ANCHOR), 0.0
    if group == "face":
        pivot = frame.anchor + frame.brain_scale * (_FACE_PIVOT - _MNI_ANCHOR)
        return pivot + frame.scale * (p - _FACE_PIVOT) + (0.0, 0.0, frame.face_shift), 0.0
    relative = p - _MNI_FORAMEN
    angle = frame.pitch * float(np.clip(-relative[2] / _PITCH_RAMP_MM, 0.0, 1.0))
    return frame.foramen + frame.scale * (_rotation((angle, 0.0, 0.0)) @ relative), angle


def _draw_frame(points: np.ndarray, rng: np.random.Generator, config: HeadConfig) -> _Frame:
    """Anchors and scale from the brain's voxel centres ((3, N) world mm), a random face scale and neck pitch."""
    low, high = points.min(axis=1), points.max(axis=1)
    brain_scale = float(np.mean((high - low)[:2] / _MNI_SIZE))
    lowest = points[:, points[2] <= low[2] + 6.0 * brain_scale]
    face = rng.uniform(*config.face_scale)
    pitch = np.deg2rad(rng.uniform(-1.0, 1.0) * config.neck_pitch_deg)
    gap = rng.uniform(0.0, 3.0) * brain_scale
    anchor = np.array([(low[0] + high[0]) / 2, high[1], high[2]])
    frame = _Frame(anchor, lowest.mean(axis=1), brain_scale, brain_scale * face, 0.0, float(pitch))
    return _Frame(**{**frame.__dict__, "face_shift": _eye_clearance(points, frame, gap, config)})


def _eye_clearance(points: np.ndarray, frame: _Frame, gap: float, config: HeadConfig) -> float:
    """Vertical face shift (mm) putting the globes' tops a mean skull thickness plus ``gap`` below the brain above them."""
    shell = config.thickness_scale * sum(np.mean(getattr(config, name)) for name in _LAYERS[:5])
    radius = _EYE_RADIUS * frame.scale
    shifts = []
    for side in (1.0, -1.0):
        eye, _ = _place("face", _EYE * (side, 1.0, 1.0), frame)
        above = np.hypot(points[0] - eye[0], points[1] - eye[1]) <= 0.7 * radius
        if above.any():
            shifts.append(points[2, above].min() - shell - gap - radius - eye[2])
    if not shifts:
        return 0.0
    return float(np.clip(min(shifts), -25.0 * frame.brain_scale, 15.0 * frame.brain_scale))


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything drawn before the canvas exists: frame, field levels, placed parts, canvas box, layer reaches (mm)."""

    frame: _Frame
    levels: np.ndarray
    envelope: list[_Shape]
    deep: list[_Shape]
    low: np.ndarray
    high: np.ndarray
    reach: float
    surface_reach: float


def _plan(points: np.ndarray, voxel: float, rng: np.random.Generator, config: HeadConfig) -> _Plan:
    """Draw the frame, the thickness levels and every part; size the canvas to hold them (brain points: (3, N) mm)."""
    frame = _draw_frame(points, rng, config)
    levels = _Fields.random_levels(rng)
    bottom = _place("face", _CHIN, frame)[0][2] - config.neck_length_mm * frame.scale  # world z of the canvas's bottom
    floor = _MNI_FORAMEN[2] + (bottom - frame.foramen[2]) / frame.scale - 20.0  # canonical z where neck parts stop
    envelope = _place_all(_FACE_ENVELOPE + _NECK_ENVELOPE, frame, rng, config, floor)
    deep = _place_all(_FACE + _NECK + tuple(_spine(floor)), frame, rng, config, floor)
    reach = _reach(config, levels, _RANGES) + 2 * voxel  # + the skull's and the skin's one-voxel minimum
    muscle = _reach(config, levels, ("temporal_muscle_mm",))  # only lateral: needed along x only
    margins = np.array([reach, reach - muscle, reach - muscle])
    low, high = _canvas_bounds(points, envelope + deep, bottom, margins, voxel)
    return _Plan(frame, levels, envelope, deep, low, high, reach, _reach(config, levels, _SURFACE) + voxel)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    """3x3 rotation Rz @ Ry @ Rx for angles (radians) about x, y, z."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# --- parts: placed shapes and painting ---------------------------------------------------------------

_WARP_KNOTS = 5  # control values per axis of a part's surface warp, over [-1.5, 1.5] radii


@dataclass(frozen=True, eq=False)
class _Shape:
    """A placed part in world mm: paints its label where it lies, except over its protected labels."""

    label: int
    protect: frozenset[int]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def inside(self, world: np.ndarray, grow: float = 0.0) -> np.ndarray:
        raise NotImplementedError

    def paint(self, labels: np.ndarray, affine: np.ndarray) -> None:
        """Paint in place on a canvas (uint8 labels with their affine), only inside this part's bounding box."""
        box = _index_box(affine, labels.shape, *self.bounds())
        if box is None:
            return
        world = _box_world(affine, box)
        region = labels[box]
        wall = getattr(self, "wall", None)
        if wall is not None:
            region[self.inside(world, grow=wall[1]) & ~_lookup(self.protect)[region]] = wall[0]
        region[self.inside(world) & ~_lookup(self.protect)[region]] = self.label


@dataclass(frozen=True, eq=False)
class _Superellipsoid(_Shape):
    """``((|x|^e + |y|^e)^(ez/e) + |z|^ez)^(1/ez) <= 1 + warp`` in local coordinates scaled by the radii."""

    centre: np.ndarray
    rotation: np.ndarray  # local -> world
    radii: np.ndarray
    exponents: tuple[float, float]
    warp: np.ndarray  # (_WARP_KNOTS,) * 3 relative change of the radius, smooth over the surface
    wall: tuple[int, float] | None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        grow = self.wall[1] if self.wall else 0.0
        half = np.abs(self.rotation) @ ((self.radii + grow) * (1.0 + np.abs(self.warp).max()))
        return self.centre - half, self.centre + half

    def inside(self, world: np.ndarray, grow: float = 0.0) -> np.ndarray:
        offset = world - self.centre.reshape(3, 1, 1, 1).astype(np.float32)
        local = np.einsum("ji,j...->i...", self.rotation.astype(np.float32), offset)
        local /= (self.radii + grow).reshape(3, 1, 1, 1).astype(np.float32)
        radius = _superquadric_radius(local, *self.exponents)
        most = float(np.abs(self.warp).max())
        inside = radius <= 1.0 - most
        edge = ~inside & (radius <= 1.0 + most)  # only there can the warp decide
        knots = np.clip((local[:, edge] + 1.5) * ((_WARP_KNOTS - 1) / 3.0), 0, _WARP_KNOTS - 1)
        inside[edge] = radius[edge] <= 1.0 + ndimage.map_coordinates(self.warp, knots, order=1, mode="nearest")
        return inside


def _superquadric_radius(local: np.ndarray, flat: float, vertical: float) -> np.ndarray:
    """``((|x|^flat + |y|^flat)^(vertical/flat) + |z|^vertical)^(1/vertical)``: 1 on the surface (Euclidean for 2, 2)."""
    if flat == vertical == 2.0:
        return np.sqrt((local * local).sum(axis=0))
    plane = np.abs(local[0]) ** flat + np.abs(local[1]) ** flat
    return (plane ** (vertical / flat) + np.abs(local[2]) ** vertical) ** (1.0 / vertical)


@dataclass(frozen=True, eq=False)
class _Polyline(_Shape):
    """Points within ``radius`` of a polyline, distances measured after dividing coordinates by ``stretch``."""

    points: np.ndarray  # (n, 3) world
    radius: float
    stretch: np.ndarray

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = self.radius * self.stretch
        return self.points.min(axis=0) - reach, self.points.max(axis=0) + reach

    def inside(self, world: np.ndarray, grow: float = 0.0) -> np.ndarray:
        scale = self.stretch.reshape(3, 1, 1, 1).astype(np.float32)
        x = world / scale
        nearest = np.full(world.shape[1:], np.inf, dtype=np.float32)
        for start, end in zip(self.points[:-1] / self.stretch, self.points[1:] / self.stretch):
            start, step = start.reshape(3, 1, 1, 1).astype(np.float32), (end - start).reshape(3, 1, 1, 1).astype(np.float32)
            along = np.clip(((x - start) * step).sum(axis=0) / max(float((step**2).sum()), 1e-12), 0.0, 1.0)
            np.minimum(nearest, ((x - start - along * step) ** 2).sum(axis=0), out=nearest)
        return nearest <= (self.radius + grow) ** 2


def _place_all(specs: Sequence[_Blob | _Tube], frame: _Frame, rng: np.random.Generator, config: HeadConfig,
               floor: float) -> list[_Shape]:  # fmt: skip
    """Draw every part (and its mirror image) in order; absent parts still draw, so later parts keep their draws.
    Tubes stop at canonical height ``floor`` (below the canvas)."""
    shapes: list[_Shape] = []
    for spec in specs:
        present = rng.random() < spec.probability
        size = 1.0 + config.size_jitter * spec.jitter * rng.uniform(-1.0, 1.0, 3)
        shift = config.position_jitter_mm * spec.jitter * rng.uniform(-1.0, 1.0, 3)
        tilt = np.deg2rad(np.asarray(getattr(spec, "tilt_deg", (0.0, 0.0, 0.0))) + 5.0 * spec.jitter * rng.uniform(-1.0, 1.0, 3))
        for side in (1.0, -1.0) if spec.mirror else (1.0,):
            mirror = np.array([side, 1.0, 1.0])
            offset = mirror * shift + 0.25 * config.position_jitter_mm * spec.jitter * rng.uniform(-1.0, 1.0, 3)
            warp = np.clip(rng.standard_normal((_WARP_KNOTS,) * 3), -2.5, 2.5) * config.shape_warp * spec.jitter
            if present and isinstance(spec, _Blob):
                shapes.append(_place_blob(spec, frame, mirror, offset, size, tilt * (1.0, side, side), warp))
            elif present and len(points := _cut(spec.points, floor)) > 1:
                shapes.append(_place_tube(spec, points, frame, mirror, offset, size[0]))
    return shapes


def _place_blob(spec: _Blob, frame: _Frame, mirror: np.ndarray, offset: np.ndarray, size: np.ndarray,
                tilt: np.ndarray, warp: np.ndarray) -> _Superellipsoid:  # fmt: skip
    centre, pitch = _place(spec.group, mirror * spec.centre + offset, frame)
    rotation = _rotation((pitch, 0.0, 0.0)) @ _rotation(tilt)
    wall = None if spec.wall is None else (spec.wall[0], spec.wall[1] * frame.scale)
    radii = np.asarray(spec.radii) * size * frame.scale
    return _Superellipsoid(spec.label, spec.protect, centre, rotation, radii, spec.exponents, warp.astype(np.float32), wall)


def _cut(points: Sequence[Sequence[float]], floor: float) -> list[np.ndarray]:
    """A polyline's points above canonical height ``floor``, ended where it crosses that height."""
    kept: list[np.ndarray] = []
    for start, end in zip(points, [*points[1:], None]):
        start = np.asarray(start, dtype=np.float64)
        if start[2] < floor:
            break
        kept.append(start)
        if end is not None and end[2] < floor:
            kept.append(start + (np.asarray(end) - start) * (start[2] - floor) / (start[2] - end[2]))
    return kept


def _place_tube(spec: _Tube, points: Sequence[np.ndarray], frame: _Frame, mirror: np.ndarray, offset: np.ndarray,
                size: float) -> _Polyline:  # fmt: skip
    points = np.stack([_place(spec.group, mirror * p + offset, frame)[0] for p in points])
    return _Polyline(spec.label, spec.protect, points, spec.radius * size * frame.scale, np.asarray(spec.stretch, dtype=np.float64))


_LOOKUPS: dict[frozenset[int], np.ndarray] = {}


def _lookup(protect: frozenset[int]) -> np.ndarray:
    """Boolean table over the head labels: True for the labels in ``protect``."""
    if protect not in _LOOKUPS:
        table = np.zeros(256, dtype=bool)
        table[list(protect)] = True
        _LOOKUPS[protect] = table
    return _LOOKUPS[protect]


# --- canvas -------------------------------------------------------------------------------------------


def _voxel_points(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3, N) world mm of the voxel centres where ``mask`` is True."""
    indices = np.stack(np.nonzero(mask)).astype(np.float64)
    return affine[:3, :3] @ indices + affine[:3, 3:]


def _canvas_bounds(points: np.ndarray, shapes: Sequence[_Shape], bottom: float, margins: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """World box holding the cranial layers (``margins`` mm around the brain along x, y, z) and every part, cut at
    ``bottom`` mm (the neck), with 2 voxels of air around."""
    low, high = points.min(axis=1) - margins, points.max(axis=1) + margins
    for shape in shapes:
        shape_low, shape_high = shape.bounds()
        low, high = np.minimum(low, shape_low), np.maximum(high, shape_high)
    low[2] = max(low[2], min(bottom, points[2].min() - margins[2]))
    return low - 2 * voxel, high + 2 * voxel


def _reach(config: HeadConfig, levels: np.ndarray, names: Sequence[str]) -> float:
    """Largest total thickness (mm) the named layers can reach with these field levels."""
    highest = np.minimum(1.0, levels + THICKNESS_VARIATION)
    ranges = [(getattr(config, name), highest[_RANGES.index(name)]) for name in names]
    return config.thickness_scale * float(sum(low + (high - low) * u for (low, high), u in ranges))


def _grown(brain: LabelMap, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 labels, affine): the brain's grid padded with air by whole voxels until it holds [low, high]."""
    corners = np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1)
    voxels = np.linalg.inv(brain.affine)[:3] @ np.vstack([corners, np.ones(corners.shape[1])])
    before = np.maximum(0, -np.floor(voxels.min(axis=1)).astype(int))
    after = np.maximum(0, np.ceil(voxels.max(axis=1)).astype(int) - (np.array(brain.shape) - 1))
    labels = np.pad(brain.array.astype(np.uint8), list(zip(before, after)))
    shift = np.eye(4)
    shift[:3, 3] = -before
    return labels, brain.affine @ shift


def _index_box(affine: np.ndarray, shape: Sequence[int], low: np.ndarray, high: np.ndarray) -> tuple[slice, ...] | None:
    """Array slices covering the world box [low, high], or None when it misses the canvas."""
    corners = np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1)
    voxels = np.linalg.inv(affine)[:3] @ np.vstack([corners, np.ones(corners.shape[1])])
    first = np.maximum(0, np.floor(voxels.min(axis=1)).astype(int))
    last = np.minimum(np.asarray(shape), np.ceil(voxels.max(axis=1)).astype(int) + 1)
    if np.any(last <= first):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(first, last))


def _box_world(affine: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    """(3, a, b, c) float32 world mm of the voxels of an array box."""
    matrix = affine.astype(np.float32)
    world = matrix[:3, 3].reshape(3, 1, 1, 1).copy()
    for axis, part in enumerate(box):
        shape = [1, 1, 1]
        shape[axis] = part.stop - part.start
        index = np.arange(part.start, part.stop, dtype=np.float32).reshape(shape)
        world = world + matrix[:3, axis].reshape(3, 1, 1, 1) * index
    return world


# --- layers: cranium and surface ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Fields:
    """Smooth random fields in [0, 1], one per thickness in `_RANGES`, on the canvas's voxel grid: control values
    every ``spacing`` voxels (control point 0 at voxel -spacing / 2), linear in between."""

    levels: np.ndarray  # (channels,) head-wide level of each field
    values: np.ndarray  # (channels, k0, k1, k2) float32 control values in [0, 1]
    spacing: float

    @staticmethod
    def random_levels(rng: np.random.Generator) -> np.ndarray:
        """A head-wide level in [0, 1] per channel: drawn first, so the canvas can be sized by them."""
        return rng.random(len(_RANGES))

    @classmethod
    def random(cls, rng: np.random.Generator, levels: np.ndarray, shape: Sequence[int], spacing: float) -> _Fields:
        """Control values within +- `THICKNESS_VARIATION` of each level (clipped to [0, 1]) covering ``shape``."""
        knots = [int(np.ceil((n - 1) / spacing + 0.5)) + 2 for n in shape]
        variation = THICKNESS_VARIATION * rng.uniform(-1.0, 1.0, (len(levels), *knots))
        values = np.clip(levels.reshape(-1, 1, 1, 1) + variation, 0.0, 1.0)
        return cls(levels, values.astype(np.float32), float(spacing))

    def highest(self) -> np.ndarray:
        """(channels,) an upper bound of each field."""
        return np.minimum(1.0, self.levels + THICKNESS_VARIATION)

    def at(self, channels: Sequence[int], box: Sequence[slice], where: tuple[np.ndarray, ...]) -> np.ndarray:
        """(len(channels), N) float32 values of fields at the voxels ``where`` (indices within an array box).

        Each field is evaluated by three small matrix products on every `step`-th voxel of the box, then looked
        up: a field this smooth changes by under 1 % of its range from one such voxel to the next.
        """
        step = self.step
        w0, w1, w2 = (
            np.clip(1.0 - np.abs((np.arange(b.start, b.stop, step) / self.spacing + 0.5)[:, None] - np.arange(k)), 0.0, None).astype(np.float32)
            for b, k in zip(box, self.values.shape[1:])
        )
        flat = np.ravel_multi_index(tuple(w // step for w in where), (len(w0), len(w1), len(w2)))
        values = np.empty((len(channels), flat.size), dtype=np.float32)
        for row, channel in enumerate(channels):
            partial = w1 @ (self.values[channel] @ w2.T)  # (k0, n1, n2)
            np.take(w0 @ partial.reshape(partial.shape[0], -1), flat, out=values[row])
        return values

    @property
    def step(self) -> int:
        """Voxel step of the evaluation grid: about a twentieth of the control-point spacing."""
        return max(1, int(self.spacing // 20))


@dataclass(frozen=True, eq=False)
class _Thickness:
    """Layer thicknesses in mm: ranges of the config, fields, temporal-muscle weight, closed skull."""

    fields: _Fields
    frame: _Frame
    affine: np.ndarray
    voxel: float
    config: HeadConfig

    def at(self, box: Sequence[slice], where: tuple[np.ndarray, ...], names: Sequence[str]) -> np.ndarray:
        """(len(names), N) thicknesses (mm) of the named `_RANGES` entries at the voxels ``where`` of an array box."""
        ranges = np.array([getattr(self.config, name) for name in names], dtype=np.float32) * self.config.thickness_scale
        thickness = self.fields.at([_RANGES.index(name) for name in names], box, where)
        thickness *= ranges[:, 1:] - ranges[:, :1]
        thickness += ranges[:, :1]
        if "temporal_muscle_mm" in names:
            thickness[names.index("temporal_muscle_mm")] *= self._temporal_weight(box, where)
        if "diploe_mm" in names:  # inner table, diploe and outer table together at least one voxel thick
            bone = thickness[[names.index(n) for n in ("inner_table_mm", "diploe_mm", "outer_table_mm")]].sum(axis=0)
            thickness[names.index("diploe_mm")] += np.maximum(0.0, self.voxel - bone)
        if "skin_mm" in names:  # the outermost voxels are skin: a closed outline at any voxel size
            np.maximum(thickness[names.index("skin_mm")], self.voxel, out=thickness[names.index("skin_mm")])
        return thickness

    def _temporal_weight(self, box: Sequence[slice], where: tuple[np.ndarray, ...]) -> np.ndarray:
        """1 over the temporal fossae (lateral, from the zygomatic arch to the temporal lines), 0 elsewhere, smooth."""
        frame = self.frame
        index = np.stack([w + b.start for w, b in zip(where, box)]).astype(np.float32)
        world = self.affine[:3, :3].astype(np.float32) @ index + self.affine[:3, 3:].astype(np.float32)
        canonical = (world - frame.anchor.reshape(3, 1).astype(np.float32)) / np.float32(frame.brain_scale)
        canonical += _MNI_ANCHOR.reshape(3, 1).astype(np.float32)
        weight = np.clip((np.abs(canonical[0]) / np.float32(_MNI_SIZE[0] / 2) - 0.6) / 0.3, 0.0, 1.0)
        lateral = weight > 0
        height, depth = (canonical[2, lateral] + 5.0) / 45.0, (canonical[1, lateral] - 5.0) / 48.0
        weight[lateral] *= np.exp(-(height * height) ** 2 - (depth * depth) ** 2)
        return weight


_CRANIAL_LUT = np.array([EXTRACEREBRAL_CSF, DURA, INNER_TABLE, DIPLOE, OUTER_TABLE, MASTICATORY_MUSCLE, SUBCUTANEOUS_FAT, SUBCUTANEOUS_FAT, AIR], dtype=np.uint8)


def _paint_cranium(labels: np.ndarray, thickness: _Thickness, reach: float) -> None:
    """Layers by distance from the brain: CSF, dura, tables, diploe and temporal muscle over anything but the
    brain; the scalp beyond them (fat here, skin later) only over air. ``reach``: largest total thickness, mm."""
    brain = _lookup(_BRAIN)[labels]
    voxel = thickness.voxel
    margin = int(np.ceil(reach / voxel)) + 1
    box = tuple(slice(max(0, int(a.min()) - margin), int(a.max()) + margin + 1) for a in np.nonzero(brain))
    distance = ndimage.distance_transform_edt(~brain[box])  # in voxels: the grid is isotropic
    band = np.nonzero((distance > 0) & (distance <= reach / voxel))
    depth = (distance[band] * voxel).astype(np.float32)
    limit = np.zeros_like(depth)
    layer = np.zeros(depth.shape, dtype=np.uint8)
    for row in thickness.at(box, band, _RANGES):
        limit += row
        layer += depth > limit
    region = labels[box]
    current = region[band]
    region[band] = np.where((layer <= 5) | (current == AIR), _CRANIAL_LUT[layer], current)


def _paint_subcutaneous(labels: np.ndarray, thickness: _Thickness, reach: float) -> tuple[np.ndarray, ...]:
    """Fill the head's inner holes, paint subcutaneous fat by distance from the air outside (not over the brain or
    the cranial layers) and return the skin voxels' indices, to be painted last. ``reach``: fat + skin, mm."""
    head = labels != AIR
    holes = _holes(head)
    labels[holes] = FACIAL_SOFT_TISSUE
    depth = ndimage.distance_transform_edt(head | holes)  # in voxels: the grid is isotropic
    near = np.nonzero((depth > 0) & (depth <= reach / thickness.voxel))
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in near)
    local = tuple(a - b.start for a, b in zip(near, box))
    fat, skin = thickness.at(box, local, _SURFACE)
    d = (depth[near] * thickness.voxel).astype(np.float32)
    free = ~_lookup(_SKULL)[labels[near]]
    in_skin = free & (d <= skin)
    in_fat = free & ~in_skin & (d <= skin + fat)
    labels[tuple(i[in_fat] for i in near)] = SUBCUTANEOUS_FAT
    return tuple(i[in_skin] for i in near)


def _holes(head: np.ndarray) -> np.ndarray:
    """Air voxels not connected to the canvas border (6-connectivity): pockets inside the head."""
    outside, count = ndimage.label(~head)
    on_border = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            on_border[np.take(outside, end, axis=axis)] = True
    on_border[0] = True  # the head itself
    return ~on_border[outside]
