"""Synthetic full-head subjects: a random head around a brain label map, imaged with a random contrast.

`synthesize_head_subject` chains the two halves of the real-heads engine: `brainseg_tf.datasets.heads.build_head`
(extra-cerebral anatomy grown around the brain, generation labels `HEAD_LABELS`) and
`brainseg_tf.data.synthesis.synthesize_image` (a contrast per label, bias, gamma, resolution loss,
Rician noise). `T1_PRIORS` gives every generation label a T1-weighted intensity range (white matter
about 1; fat bright; cortical bone, air and fast-flowing blood dark; marrow and muscle in between, as
on an MPRAGE or spoiled-gradient-echo T1), from which a share of the samples draws its contrast; the
rest get contrasts unrelated to T1 (`SynthesisConfig.prior_probability`). A share of the heads
(`HeadConfig.stripped_probability`) arrives already skull-stripped, as a stripping tool writes it: the
whole head is imaged, then every voxel farther than a random margin from the brain is set to exactly 0
(and its label to air). Exact zeros matter: a network that only ever saw noisy air fails on them. When
every head is stripped, ``HeadConfig.anatomy`` "cranium" grows only the cranial layers near the brain
(`grow_head`): the face and neck would be cut away, and a 1 mm head costs a tenth.

Labels of one tissue (`SAME_TISSUE`: the CSF around the brain and the brain's own, fats, muscles, the two
skull tables) share their contrast in an image, as on a scanner.

Geometry: RAS+ grids, arrays indexed (i, j, k); the image and the label map share the head's grid,
so `head_to_tissue` and `head_brain_mask` of the labels are the training targets voxel for voxel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from brainseg_tf.config import GeneratorConfig, HeadConfig
from brainseg_tf.data.synthesis import IntensityPrior, synthesize_image, unit_smooth_field
from brainseg_tf.datasets import heads
from brainseg_tf.errors import ConfigError, LabelError
from brainseg_tf.geometry import conform
from brainseg_tf.io import Image, LabelMap
from brainseg_tf.labels import STRUCTURES

T1_PRIORS: dict[int, IntensityPrior] = {
    heads.AIR: IntensityPrior((0.0, 0.03), (0.0, 0.01)),
    heads.BRAIN_CSF: IntensityPrior((0.1, 0.35), (0.01, 0.05)),
    heads.GRAY_MATTER: IntensityPrior((0.45, 0.7), (0.02, 0.06)),
    heads.WHITE_MATTER: IntensityPrior((0.8, 1.05), (0.02, 0.05)),
    heads.EXTRACEREBRAL_CSF: IntensityPrior((0.1, 0.35), (0.01, 0.05)),
    heads.DURA: IntensityPrior((0.15, 0.5), (0.02, 0.08)),
    heads.INNER_TABLE: IntensityPrior((0.0, 0.15), (0.01, 0.05)),
    heads.DIPLOE: IntensityPrior((0.4, 1.1), (0.03, 0.12)),  # red (children) to fatty (adults) marrow
    heads.OUTER_TABLE: IntensityPrior((0.0, 0.15), (0.01, 0.05)),
    heads.SUBCUTANEOUS_FAT: IntensityPrior((0.9, 1.35), (0.03, 0.1)),
    heads.SKIN: IntensityPrior((0.35, 0.7), (0.03, 0.1)),
    heads.MASTICATORY_MUSCLE: IntensityPrior((0.3, 0.55), (0.02, 0.06)),
    heads.EYE: IntensityPrior((0.08, 0.3), (0.01, 0.05)),  # vitreous: CSF-like
    heads.ORBITAL_FAT: IntensityPrior((0.9, 1.35), (0.03, 0.1)),
    heads.OPTIC_NERVE: IntensityPrior((0.5, 0.85), (0.02, 0.06)),
    heads.SINUS_AIR: IntensityPrior((0.0, 0.05), (0.0, 0.02)),
    heads.NASAL_CAVITY: IntensityPrior((0.0, 0.25), (0.01, 0.08)),  # air with mucosa
    heads.FACIAL_BONE: IntensityPrior((0.05, 0.6), (0.03, 0.12)),  # cortex and marrow mixed
    heads.MANDIBLE: IntensityPrior((0.1, 0.8), (0.03, 0.12)),
    heads.TEETH: IntensityPrior((0.0, 0.1), (0.0, 0.03)),
    heads.TONGUE: IntensityPrior((0.35, 0.6), (0.02, 0.07)),
    heads.AIRWAY: IntensityPrior((0.0, 0.05), (0.0, 0.02)),
    heads.VERTEBRA: IntensityPrior((0.4, 0.95), (0.03, 0.1)),  # marrow-filled bodies
    heads.DISC: IntensityPrior((0.25, 0.5), (0.02, 0.06)),
    heads.SPINAL_CORD: IntensityPrior((0.6, 0.9), (0.02, 0.05)),
    heads.SPINAL_CSF: IntensityPrior((0.1, 0.35), (0.01, 0.05)),
    heads.NECK_MUSCLE: IntensityPrior((0.3, 0.55), (0.02, 0.06)),
    heads.DEEP_FAT: IntensityPrior((0.9, 1.35), (0.03, 0.1)),
    heads.FACIAL_SOFT_TISSUE: IntensityPrior((0.35, 0.75), (0.03, 0.1)),
    heads.VESSEL: IntensityPrior((0.0, 0.6), (0.02, 0.1)),  # flow voids to slow or enhanced flow
}
"""A T1-weighted intensity prior for every generation label of `brainseg_tf.datasets.heads.HEAD_LABELS`."""

SAME_TISSUE: dict[int, int] = {
    heads.EXTRACEREBRAL_CSF: heads.BRAIN_CSF,  # one fluid: where the brain ends must be found by shape, not by a contrast no scanner makes
    heads.SPINAL_CSF: heads.BRAIN_CSF,
    heads.ORBITAL_FAT: heads.SUBCUTANEOUS_FAT,
    heads.DEEP_FAT: heads.SUBCUTANEOUS_FAT,
    heads.NECK_MUSCLE: heads.MASTICATORY_MUSCLE,
    heads.OUTER_TABLE: heads.INNER_TABLE,
}
"""Generation labels imaged as another label's tissue: in one image they share its mean and spread (their own
priors are not drawn). Labels stay apart in the label map and the targets; only the contrast is tied."""
_CONTRAST_LUT = np.array([SAME_TISSUE.get(value, value) for value, _ in heads.HEAD_LABELS], dtype=np.uint8)

PART_STRIDE = 32
"""Label value step between the parts of one tissue (`split_tissues`): part ``k`` of tissue ``t`` is ``t + k * PART_STRIDE``."""
UNSPLIT_TISSUES = frozenset({heads.AIR, *heads.BRAIN_LABELS})
"""Tissue values `split_tissues` leaves whole: air, and the brain's classes with the CSF imaged like them (the brain's edge
is to be found by shape)."""
_PART_PRIORS: dict[int, IntensityPrior] = {value + k * PART_STRIDE: prior for value, prior in T1_PRIORS.items() for k in range(8)}
assert len(heads.HEAD_LABELS) <= PART_STRIDE and max(_PART_PRIORS) <= np.iinfo(np.uint8).max

CRANIUM_CONTEXT_MM = 12.0
"""How far beyond the largest stripping margin the cranial layers reach when every head is stripped: thick
slices and blur near the cut then mix in skull and scalp, as on a whole head, not air."""


def synthesize_head_subject(
    brain: LabelMap, rng: np.random.Generator, config: GeneratorConfig, structures: LabelMap | None = None
) -> tuple[Image, LabelMap]:
    """A full head around ``brain`` and its synthetic image, on one grid.

    Args:
        brain: ``TISSUE`` label map on an isotropic RAS+ grid (see `heads.build_head`).
        rng: the subject's generator: the head first, then its image, then whether it is stripped
            (three children, so changing one recipe does not shift the others' draws).
        config: ``config.heads`` shapes the head, ``config.synthesis`` its image.
        structures: the brain's ``STRUCTURES`` classes on ``brain``'s grid (``brain`` being their tissues,
            `tissue_of_structure_classes`): each structure is then imaged with a contrast of its own, drawn from its
            kind's prior (`structure_priors`), not its tissue's. The head and every draw before the image are the same.

    Returns:
        (float32 image, not normalised; head label map of generation labels), same shape and affine
        (`on_head_grid` puts ``structures`` on it).

    Raises:
        ValueError: a brain `build_head` refuses, or ``structures`` on another grid or not matching ``brain``.
        ConfigError: a setting out of range.
    """
    head_rng, image_rng, strip_rng, split_rng = rng.spawn(4)  # spawn(n) extends spawn(n - 1): older recipes keep their draws
    if structures is not None:
        _check_structures_of(brain, structures)
    labels = grow_head(brain, head_rng, config.heads)
    voxel_size = tuple(float(s) for s in labels.voxel_size)
    tissues = _CONTRAST_LUT[np.asarray(labels.array)]  # labels of one tissue share its contrast (SAME_TISSUE)
    if config.heads.tissue_split_probability > 0 and split_rng.random() < config.heads.tissue_split_probability:
        tissues = split_tissues(tissues, voxel_size, split_rng, config.heads)
    priors = _PART_PRIORS
    if structures is not None:
        classes = on_head_grid(structures, labels)
        tissues = np.where(classes > 0, STRUCTURE_GENERATION_BASE + classes, tissues).astype(np.uint16)
        priors = {**_PART_PRIORS, **structure_priors()}
    image = synthesize_image(tissues, voxel_size, priors, image_rng, config.synthesis)  # type: ignore[arg-type]
    kept = stripped_region(labels, strip_rng, config.heads)
    if kept is not None:
        image = np.where(kept, image, 0.0).astype(image.dtype)
        labels = labels.with_array(np.where(kept, labels.array, heads.AIR).astype(np.asarray(labels.array).dtype))
    return Image(image, labels.affine), labels


def split_tissues(tissues: np.ndarray, voxel_size: tuple[float, float, float], rng: np.random.Generator, config: HeadConfig) -> np.ndarray:
    """Tissues outside the brain cut into ``config.tissue_parts`` parts, each imaged with a contrast of its own.

    Real tissue around the brain is not uniform (fascia, marrow, glands, vessels), and a network that only saw
    uniform tissue there can take anything textured for "not brain" and anything smooth for brain. One smooth
    random field (control points every ``tissue_part_spacing_mm``, drawn per image) is cut at its quantiles over
    the split voxels into equal shares; part ``k`` of tissue ``t`` becomes ``t + k * PART_STRIDE``, imaged from
    ``t``'s prior. Air, the brain's classes and the CSF tied to them (`UNSPLIT_TISSUES`) stay whole.

    Args:
        tissues: uint8 contrast labels (generation labels after `SAME_TISSUE`), values below `PART_STRIDE`.
        voxel_size: mm along the array axes.
        rng: the image's split generator.
        config: ``tissue_parts`` and ``tissue_part_spacing_mm``.
    """
    parts = config.tissue_parts
    split = ~np.isin(tissues, tuple(UNSPLIT_TISSUES))
    if parts <= 1 or not split.any():
        return tissues
    spacing = float(rng.uniform(*config.tissue_part_spacing_mm)) / float(min(voxel_size))
    field = unit_smooth_field(tissues.shape, spacing, rng)
    inside = field[split]
    cuts = np.quantile(inside[:: max(1, inside.size // 200_000)], np.arange(1, parts) / parts)
    part = np.digitize(field, cuts).astype(np.uint8)
    return np.where(split, tissues + part * np.uint8(PART_STRIDE), tissues).astype(np.uint8)


def grow_head(brain: LabelMap, rng: np.random.Generator, config: HeadConfig) -> LabelMap:
    """The head label map around ``brain``: `heads.build_head`, or with ``anatomy`` "cranium" only the
    cranial layers within the largest stripping margin plus `CRANIUM_CONTEXT_MM` (`heads.build_cranium`).

    Raises:
        ConfigError: ``anatomy`` unknown, or "cranium" for heads that are not all stripped (the cut-off
            cranium would show).
    """
    if config.anatomy == "full":
        return heads.build_head(brain, rng, config)
    if config.anatomy != "cranium":
        raise ConfigError(f"Expected generator.heads.anatomy 'full' or 'cranium'. Received: {config.anatomy!r}")
    if config.stripped_probability != 1:
        raise ConfigError("Expected generator.heads.stripped_probability 1 with anatomy 'cranium' (every head stripped). "
                          f"Received: stripped_probability={config.stripped_probability!r}")
    return heads.build_cranium(brain, rng, config, float(config.stripped_margin_mm[1]) + CRANIUM_CONTEXT_MM)


CHILD_THICKNESS_SLOPE = 1.3
"""`child_head`: layer thickness lost per unit of brain scale below 1 (a 0.65x brain: layers x0.55, a 0.8x: x0.74)."""


def child_head(config: HeadConfig, brain_scale: float) -> HeadConfig:
    """The head settings for a brain drawn at ``brain_scale`` (< 1: a child's): every layer thinner by
    `CHILD_THICKNESS_SLOPE` per unit of scale lost, the face smaller by the scale itself (on top of the frame's own
    scaling with the brain), as the realistic-heads suite's child heads are; ``config`` unchanged at 1 or more."""
    if brain_scale >= 1:
        return config
    thickness = max(0.2, 1.0 - CHILD_THICKNESS_SLOPE * (1.0 - brain_scale))
    face = (config.face_scale[0] * brain_scale, config.face_scale[1] * brain_scale)
    return dataclasses.replace(config, thickness_scale=config.thickness_scale * thickness, face_scale=face)


def scaled_brain(brain: LabelMap, factor: float | tuple[float, float, float]) -> LabelMap:
    """The brain scaled by ``factor`` (one for all world axes, or one per world axis R, A, S) about its centroid
    in world space, back on a grid of its own voxel size (nearest): a child's brain from an adult's (the
    realistic-heads suite, `HeadConfig.brain_scale`), or a brain of other proportions (`HeadConfig.brain_aspect_jitter`)."""
    factors = np.broadcast_to(np.asarray(factor, dtype=np.float64), (3,))
    if not (np.all(np.isfinite(factors)) and np.all(factors > 0)):
        raise ValueError(f"Expected a brain scale factor > 0 (one, or one per axis). Received: factor={factor!r}")
    array = np.asarray(brain.array)
    affine = np.asarray(brain.affine, dtype=np.float64)
    centre = (affine[:3, :3] @ np.argwhere(array > 0).T.astype(np.float64)).mean(axis=1) + affine[:3, 3]
    about = np.eye(4)
    about[:3, :3] = np.diag(factors)
    about[:3, 3] = centre * (1 - factors)  # x -> centre + factor * (x - centre), per world axis
    scaled, _ = conform(LabelMap(array, about @ affine), float(brain.voxel_size.mean()))
    return LabelMap(np.ascontiguousarray(scaled.array), scaled.affine)


def stripped_region(labels: LabelMap, rng: np.random.Generator, config: HeadConfig) -> np.ndarray | None:
    """With probability ``config.stripped_probability``, what a skull-stripping tool keeps of the head: every
    voxel within a margin drawn from ``config.stripped_margin_mm`` of the brain (`heads.BRAIN_LABELS`);
    None for a head left whole."""
    if config.stripped_probability <= 0 or rng.random() >= config.stripped_probability:
        return None
    margin = float(rng.uniform(*config.stripped_margin_mm))
    brain = heads.head_brain_mask(np.asarray(labels.array))
    spacing = tuple(float(s) for s in labels.voxel_size)
    return np.asarray(ndimage.distance_transform_edt(~brain, sampling=spacing) <= margin)


STRUCTURE_GENERATION_BASE = 256
"""Generation label of ``STRUCTURES`` class ``c`` inside the brain: ``STRUCTURE_GENERATION_BASE + c``, above every head
label and its parts (`PART_STRIDE`), so a structure never shares a contrast with a tissue of the head."""


def structure_priors() -> dict[int, IntensityPrior]:
    """The T1-like prior of each ``STRUCTURES`` foreground class's generation label: its kind's
    (`brainseg_tf.datasets.structures.kind_priors`: CSF, cortex, deep gray a little brighter, white matter), the
    whole range, so each structure's mean is drawn on its own within it."""
    from brainseg_tf.datasets.structures import STRUCTURE_KINDS, kind_priors

    kinds = kind_priors()
    return {STRUCTURE_GENERATION_BASE + STRUCTURES.class_index(name): kinds[kind] for name, kind in STRUCTURE_KINDS.items()}


def tissue_of_structure_classes(classes: np.ndarray) -> np.ndarray:
    """``TISSUE`` classes (0 background, 1 CSF, 2 GM, 3 WM) of ``STRUCTURES`` classes, by kind (uint8): the brain the
    head grows around.

    Raises:
        LabelError: classes outside ``STRUCTURES``.
    """
    from brainseg_tf.datasets.structures import tissue_of_structures

    classes = np.asarray(classes)
    if not np.issubdtype(classes.dtype, np.integer) or classes.min(initial=0) < 0 or classes.max(initial=0) >= STRUCTURES.num_classes:
        raise LabelError(f"Expected {STRUCTURES.name!r} classes in [0, {STRUCTURES.num_classes - 1}]. "
                         f"Received: dtype={classes.dtype}, range [{classes.min(initial=0)}, {classes.max(initial=0)}]")
    return tissue_of_structures(STRUCTURES.to_values(classes)).astype(np.uint8)


def on_head_grid(labels: LabelMap, head: LabelMap) -> np.ndarray:
    """``labels`` put on ``head``'s grid, which is theirs shifted by whole voxels (`grow_head` pads or crops the brain's
    grid): same dtype, 0 where the head's grid reaches beyond ``labels``' grid.

    Raises:
        ValueError: the grids differ by more than a whole-voxel shift.
    """
    source = np.asarray(labels.affine, dtype=np.float64)
    target = np.asarray(head.affine, dtype=np.float64)
    offset = np.linalg.solve(source, target[:, 3])[:3]  # the head grid's first voxel, in the labels' voxels
    whole = np.round(offset)
    if not (np.allclose(source[:3, :3], target[:3, :3], atol=1e-6) and np.allclose(offset, whole, atol=1e-3)):
        raise ValueError("Expected the head's grid as the brain's shifted by whole voxels. "
                         f"Received: offset {np.round(offset, 4).tolist()} voxels, matrices equal: {np.allclose(source[:3, :3], target[:3, :3], atol=1e-6)}")
    shift = whole.astype(int)
    array = np.asarray(labels.array)
    placed = np.zeros(head.shape, dtype=array.dtype)
    source_box, target_box = [], []
    for axis in range(3):
        first = max(0, shift[axis])
        last = min(array.shape[axis], shift[axis] + head.shape[axis])
        if last <= first:
            return placed
        source_box.append(slice(first, last))
        target_box.append(slice(first - shift[axis], last - shift[axis]))
    placed[tuple(target_box)] = array[tuple(source_box)]
    return placed


def _check_structures_of(brain: LabelMap, structures: LabelMap) -> None:
    """Refuse structures on another grid than ``brain``'s, or whose tissues are not ``brain``'s labels."""
    if structures.shape != brain.shape or not np.allclose(structures.affine, brain.affine, atol=1e-6):
        raise ValueError(f"Expected structures on the brain's grid (shape {brain.shape}, the same affine). "
                         f"Received: shape {structures.shape}, affine {np.round(structures.affine, 3).tolist()}")
    if not np.array_equal(tissue_of_structure_classes(structures.array), np.asarray(brain.array)):
        raise ValueError("Expected brain as the tissues of structures (tissue_of_structure_classes). Received: other labels")
