"""The realistic-heads evaluation suite: held-out synthetic full heads and their degraded variants, by seed.

Base heads grow around the embedded dataset's **test-split** brains (`brainseg_tf.datasets.build_cache`,
``read_subjects(cache, "test")``), conformed to `BASE_VOXEL_MM` (RAS+, nearest), with
`brainseg_tf.datasets.synthetic_heads.synthesize_head_subject`: adult `HeadConfig` and a realistic T1
contrast (`EVALUATION_SYNTHESIS`: T1 priors always, no thick slices, mild bias and gamma, an SNR drawn
uniformly from `SNR_RANGE`). The recipe is fixed here, not read from ``config.generator``, so training with
other generator settings never changes the cases; ``config`` only says where the brains come from.

Seeds: base head ``n`` draws from ``np.random.default_rng([seed, EVALUATION_STREAM + n])`` and variant
``VARIANTS[k - 1]`` of it from ``np.random.default_rng([seed, EVALUATION_STREAM + n, k])``, so a variant is
the same whichever other variants are asked for. Training draws ``[seed, epoch, i]`` (samples),
``[seed, epoch, batch, 7]`` (heads, `brainseg_tf.data.head_source`) and the embedded dataset
``[seed, subject]``: the streams could meet only at an epoch or subject number of 91,000 or more.

Every case lies on its own grid, image and references alike: the head's generation labels are moved with
the image (nearest neighbour; see `evaluation.head_transforms`) and the references derived from them
afterwards: ``tissue`` = `head_to_tissue` (``TISSUE`` classes 0-3), ``brain_mask`` = `head_brain_mask`.
The flagged variants (`FLAGGED`: T2-like, noise, empty) keep the base head's references on the base grid;
their scores are not used, only whether QC flags them. Variant grids are relative to the base voxel (the
names hold at the suite's 1 mm): thick slices 5 voxels long along the named axis (axial: axis 2, sagittal:
0, coronal: 1), "0.5 mm" half the base voxel over the top `FINE_FOV_HEIGHT_MM` of the head (a high-resolution
field of view, and under ``config.preprocess.max_voxels``). Child heads are new heads grown around the
brain scaled about its centroid (`brainseg_tf.datasets.synthetic_heads.scaled_brain`), with the thinner layers and smaller faces
of `CHILD_HEADS`. "template brain" images the brain with its subject's own intensities (the embedded dataset's, from the
MNI152 template), the head around it as synthesised: inside the brain, one Gaussian per label would let any mixture model
recover the labels, which says little about a real scan. "child zero air" is a new 0.65x child head with the air around it
exactly 0 (some scanners and defacing tools write that): smaller than an adult's brain, so the extractor, not the zeros, must
say it is a whole head (`inference.extraction`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from pathlib import Path

import numpy as np

from brainseg_tf.config import Config, GeneratorConfig, HeadConfig, PreprocessConfig, SynthesisConfig
from brainseg_tf.datasets import build_cache, read_info, read_subjects
from brainseg_tf.datasets.heads import AIR, WHITE_MATTER, head_brain_mask, head_to_tissue
from brainseg_tf.datasets.synthetic_heads import scaled_brain, synthesize_head_subject
from brainseg_tf.errors import DatasetError
from brainseg_tf.geometry import conform
from brainseg_tf.io import Image, LabelMap, save_volume
from brainseg_tf.labels import TISSUE
from evaluation import head_transforms as ht

logger = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = (
    "as-is", "1x1x5 axial", "1x1x5 sagittal", "1x1x5 coronal", "0.5 mm", "child 0.8x", "child 0.65x", "rotated 20deg",
    "bias +-40%", "Rician SNR 10", "Rician SNR 5", "gamma 0.5", "gamma 2", "cropped top", "T2-like", "noise", "empty",
    "template brain", "child zero air",
)  # fmt: skip
"""Every variant, in the order a base head yields them (a new one goes last: a variant's seed is its place here)."""
FLAGGED = frozenset({"T2-like", "noise", "empty"})
TEMPLATE_BRAIN = "template brain"
"""Variants input QC must flag (``HeadCase.expect_flagged``)."""
BASE_VOXEL_MM = 1.0
EVALUATION_STREAM = 91_000
SNR_RANGE = (20.0, 40.0)
EVALUATION_SYNTHESIS = SynthesisConfig(
    prior_probability=1.0, thick_slice_probability=0.0, bias_strength_range=(0.0, 0.15), gamma_log_std=0.1, gamma_range=(0.8, 1.25)
)
"""A realistic T1 (MPRAGE-like): `T1_PRIORS` contrast, mild bias (x0.86-1.16) and gamma; ``snr_range`` is set per head."""
CHILD_HEADS: dict[float, HeadConfig] = {
    0.8: HeadConfig(thickness_scale=0.75, face_scale=(0.75, 0.9)),  # school-age child
    0.65: HeadConfig(thickness_scale=0.55, face_scale=(0.6, 0.75)),  # infant or toddler: thin skull, small face
}
"""Head settings for the child variants, by the factor the brain is scaled with."""
FINE_FOV_HEIGHT_MM = 256.0
CROP_DEPTH_MM = (25.0, 35.0)
ROTATION_DEG = 20.0
BIAS_RANGE = (0.6, 1.4)


@dataclass(frozen=True, eq=False)
class HeadCase:
    """One evaluation case: an image and its references on the image's grid (RAS+, arrays indexed (i, j, k)).

    Attributes:
        name: unique and file-name safe, e.g. ``head00-mni-025-1x1x5-axial``.
        variant: one of `VARIANTS`.
        subject_id: the test brain the head grew around.
        image: float32 magnitude image with its affine.
        tissue: ``TISSUE`` classes (0 background, 1 CSF, 2 GM, 3 WM) on the image's grid.
        brain_mask: brain mask (1: CSF, GM, WM of the brain; extra-cerebral CSF is not brain), same grid.
        expect_flagged: input QC must flag this case (its references are the base head's, unused).
        params: what the variant drew or used (SNR, crop depth, rotation axis, ...).
    """

    name: str
    variant: str
    subject_id: str
    image: Image
    tissue: LabelMap
    brain_mask: LabelMap
    expect_flagged: bool
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for reference in (self.tissue, self.brain_mask):
            if reference.shape != self.image.shape or not np.allclose(reference.affine, self.image.affine, atol=1e-6):
                raise ValueError(f"Expected references on the image's grid {self.image.shape}. Received: {reference.shape} for {self.name}")


@dataclass(frozen=True, eq=False)
class _Base:
    name: str
    subject_id: str
    brain: LabelMap
    image: Image
    labels: LabelMap  # generation labels of the head
    snr: float
    max_voxels: int
    brain_image: Image | None = None  # the brain subject's own image on the brain's grid ("template brain")


class HeldOutBrain(NamedTuple):
    """A test-split brain the suite grows heads around, at `BASE_VOXEL_MM` (RAS+)."""

    subject_id: str
    brain: LabelMap  # TISSUE classes
    image: Image | None  # the subject's own image on the same grid (linear), for the "template brain" variant


Built = tuple[Image, LabelMap, dict[str, object]]


def head_cases(config: Config, n_heads: int, *, seed: int = 0, variants: Sequence[str] = VARIANTS) -> Iterator[HeadCase]:
    """The suite's cases, lazily: base head ``n`` is built, its variants yielded one by one, then the next head.

    Heads cycle through the test-split brains (head ``n`` around brain ``n mod count``, each with its own seed).

    Args:
        config: where the brains come from (``config.data``, ``config.preprocess``); must hold ``TISSUE`` labels.
        n_heads: base heads, >= 1.
        seed: suite seed, >= 0 (see the module docstring for the streams).
        variants: names among `VARIANTS`, yielded in the order given.

    Raises:
        ValueError: bad ``n_heads``, ``seed`` or ``variants`` (raised at the call, before anything is built).
        TypeError: ``config`` not a `Config`.
        DatasetError: (on the first case) the cache has no test subjects or not ``TISSUE`` labels.
    """
    if not isinstance(config, Config):
        raise TypeError(f"Expected config as a brainseg_tf.config.Config. Received: {type(config).__name__}")
    if not _is_int(n_heads) or n_heads < 1:
        raise ValueError(f"Expected n_heads as an integer >= 1. Received: n_heads={n_heads!r}")
    chosen = _checked_variants(variants, seed)
    return _cases(config, int(n_heads), int(seed), chosen)


def brain_cases(brain: LabelMap, *, subject_id: str, index: int = 0, seed: int = 0, variants: Sequence[str] = VARIANTS,
                max_voxels: int = PreprocessConfig.max_voxels, brain_image: Image | None = None) -> Iterator[HeadCase]:
    """The cases of one base head grown around ``brain`` (``TISSUE`` values, isotropic RAS+ grid) at its own voxel size.

    Args:
        brain: the brain label map; `head_cases` passes a test brain at `BASE_VOXEL_MM`.
        subject_id: names the brain in the cases.
        index: the head's number ``n`` in the seed stream.
        seed: suite seed, >= 0.
        variants: names among `VARIANTS`.
        max_voxels: the "0.5 mm" grid stays at or under this many voxels.
        brain_image: the brain subject's own image on ``brain``'s grid; needed by the "template brain" variant.

    Raises:
        ValueError: bad ``index``, ``seed`` or ``variants``; "template brain" without ``brain_image`` or with one on
            another grid; a brain `build_head` refuses (on the first case).
    """
    chosen = _checked_variants(variants, seed)
    if not _is_int(index) or index < 0:
        raise ValueError(f"Expected index as an integer >= 0. Received: index={index!r}")
    if TEMPLATE_BRAIN in chosen:
        _check_brain_image(brain, brain_image)
    return _variants_of(HeldOutBrain(subject_id, brain, brain_image), int(index), int(seed), chosen, int(max_voxels))


def write_case(case: HeadCase, folder: str | Path) -> dict[str, Path]:
    """Write a case's image (float32) and references (integers) as ``<name>_{image,tissue,brain}.nii.gz`` in
    ``folder`` (created if missing), each atomically (a temporary name, then `os.replace`: `save_volume`).

    Returns:
        ``{"image": path, "tissue": path, "brain": path}``.
    """
    if not isinstance(case, HeadCase):
        raise TypeError(f"Expected a HeadCase. Received: {type(case).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volumes = {"image": (case.image, "image"), "tissue": (case.tissue, "label"), "brain": (case.brain_mask, "label")}
    return {key: save_volume(volume, folder / f"{case.name}_{key}.nii.gz", kind)  # type: ignore[arg-type]
            for key, (volume, kind) in volumes.items()}


def held_out_brains(config: Config) -> list[HeldOutBrain]:
    """The cache's test split at `BASE_VOXEL_MM` (RAS+), in stored order."""
    path = build_cache(config)
    label_set = read_info(path).label_set
    if label_set != TISSUE:
        raise DatasetError(f"Expected a cache of TISSUE labels to grow heads around. Received: label set {label_set.name!r}")
    subjects = read_subjects(path, "test")
    if not subjects:
        raise DatasetError(f"Expected test subjects in {path}. Received: none")
    return [HeldOutBrain(s.subject_id, conform(LabelMap(np.asarray(s.classes), s.affine), BASE_VOXEL_MM)[0],  # type: ignore[arg-type]
                         conform(Image(np.asarray(s.image, np.float32), s.affine), BASE_VOXEL_MM)[0]) for s in subjects]  # type: ignore[arg-type]


def _cases(config: Config, n_heads: int, seed: int, variants: tuple[str, ...]) -> Iterator[HeadCase]:
    brains = held_out_brains(config)
    logger.info("realistic heads: %d heads around %d test brains, %d variants each, seed %d", n_heads, len(brains), len(variants), seed)
    for n in range(n_heads):
        yield from _variants_of(brains[n % len(brains)], n, seed, variants, config.preprocess.max_voxels)


def _variants_of(held_out: HeldOutBrain, n: int, seed: int, variants: tuple[str, ...], max_voxels: int) -> Iterator[HeadCase]:
    start = time.perf_counter()
    subject_id, brain = held_out.subject_id, held_out.brain
    image, labels, snr = _grow(brain, np.random.default_rng([seed, EVALUATION_STREAM + n]), HeadConfig())
    base = _Base(_safe(f"head{n:02d}-{subject_id}"), subject_id, brain, image, labels, snr, max_voxels, held_out.image)
    logger.info("%s: base head %s at %.2f mm, SNR %.1f, %.1f s", base.name, labels.shape, float(labels.voxel_size[0]), snr,
                time.perf_counter() - start)
    for variant in variants:
        start = time.perf_counter()
        rng = np.random.default_rng([seed, EVALUATION_STREAM + n, VARIANTS.index(variant) + 1])
        image, labels, params = _BUILDERS[variant](base, rng)
        tissue = LabelMap(np.asarray(head_to_tissue(labels.array), np.uint8), labels.affine)
        mask = LabelMap(head_brain_mask(labels.array).astype(np.uint8), labels.affine)
        logger.debug("%s %s: %s, %.1f s", base.name, variant, image.shape, time.perf_counter() - start)
        yield HeadCase(f"{base.name}-{_safe(variant)}", variant, subject_id, image, tissue, mask, variant in FLAGGED, params)


def _grow(brain: LabelMap, rng: np.random.Generator, heads: HeadConfig) -> tuple[Image, LabelMap, float]:
    """A head and its realistic T1 image around ``brain``; the SNR is drawn first, from the same generator."""
    snr = float(rng.uniform(*SNR_RANGE))
    synthesis = dataclasses.replace(EVALUATION_SYNTHESIS, snr_range=(snr, snr))
    image, labels = synthesize_head_subject(brain, rng, GeneratorConfig(heads=heads, synthesis=synthesis))
    return Image(np.asarray(image.array, np.float32), image.affine), labels, snr


def _as_is(base: _Base, rng: np.random.Generator) -> Built:
    return base.image, base.labels, {"snr": base.snr}


def _thick(axis: int) -> Callable[[_Base, np.random.Generator], Built]:
    def build(base: _Base, rng: np.random.Generator) -> Built:
        image, labels = ht.thick_slices(base.image, base.labels, axis, 5.0)
        return image, labels, {"slice_axis": axis, "slice_mm": float(image.voxel_size[axis])}

    return build


def _fine(base: _Base, rng: np.random.Generator) -> Built:
    voxel = base.labels.voxel_size / 2
    box = ht.head_box(base.labels, 8.0)
    in_plane = np.prod([(b.stop - b.start) * 2 for b in box[:2]])
    height = min(FINE_FOV_HEIGHT_MM, (base.max_voxels // in_plane) * float(voxel[2]))
    box = ht.head_box(base.labels, 8.0, height)
    image, labels = ht.resampled(ht.cropped(base.image, box), ht.cropped(base.labels, box), tuple(float(v) for v in voxel))
    return image, labels, {"voxel_mm": float(voxel[0]), "fov_height_mm": float(labels.shape[2] * voxel[2])}


def _child(factor: float) -> Callable[[_Base, np.random.Generator], Built]:
    def build(base: _Base, rng: np.random.Generator) -> Built:
        heads = CHILD_HEADS[factor]
        image, labels, snr = _grow(scaled_brain(base.brain, factor), rng, heads)
        return image, labels, {"scale": factor, "snr": snr, "thickness_scale": heads.thickness_scale, "face_scale": heads.face_scale}

    return build


def _child_zero_air(base: _Base, rng: np.random.Generator) -> Built:
    """A toddler's head (0.65x) with the air around it exactly 0, as some scanners and defacing tools write it: small
    enough for a stripped brain, so only the extractor can tell it is a whole head."""
    image, labels, params = _child(0.65)(base, rng)
    zeroed = np.where(np.asarray(labels.array) == AIR, np.float32(0.0), np.asarray(image.array, np.float32))
    return Image(zeroed, image.affine), labels, {**params, "air": 0.0}


def _rotated(base: _Base, rng: np.random.Generator) -> Built:
    axis = rng.uniform(0.4, 1.0, 3) * rng.choice([-1.0, 1.0], 3)  # oblique: no component under 0.4 before normalising
    axis /= np.linalg.norm(axis)
    image, labels = ht.rotated(base.image, base.labels, axis, ROTATION_DEG, rng)
    return image, labels, {"angle_deg": ROTATION_DEG, "axis": tuple(float(a) for a in axis)}


def _biased(base: _Base, rng: np.random.Generator) -> Built:
    return ht.biased(base.image, base.labels, *BIAS_RANGE, rng), base.labels, {"low": BIAS_RANGE[0], "high": BIAS_RANGE[1]}


def _rician(snr: float) -> Callable[[_Base, np.random.Generator], Built]:
    def build(base: _Base, rng: np.random.Generator) -> Built:
        return ht.rician(base.image, base.labels, snr, base.snr, rng), base.labels, {"snr": snr, "base_snr": base.snr}

    return build


def _gamma(gamma: float) -> Callable[[_Base, np.random.Generator], Built]:
    def build(base: _Base, rng: np.random.Generator) -> Built:
        return ht.gamma_changed(base.image, base.labels, gamma), base.labels, {"gamma": gamma}

    return build


def _cropped_top(base: _Base, rng: np.random.Generator) -> Built:
    depth = float(rng.uniform(*CROP_DEPTH_MM))
    image, labels = ht.cropped_top(base.image, base.labels, depth)
    return image, labels, {"depth_mm": depth}


def _t2_like(base: _Base, rng: np.random.Generator) -> Built:
    return ht.t2_like(base.image, base.labels), base.labels, {}


def _noise(base: _Base, rng: np.random.Generator) -> Built:
    sigma = ht.mean_head_intensity(base.image, base.labels)  # noise as bright as a head
    return ht.rician_background(base.image, sigma, rng), base.labels, {"sigma": sigma}


def _empty(base: _Base, rng: np.random.Generator) -> Built:
    sigma = ht.mean_head_intensity(base.image, base.labels) / base.snr  # the base head's own noise floor
    return ht.rician_background(base.image, sigma, rng), base.labels, {"sigma": sigma}


def _template_brain(base: _Base, rng: np.random.Generator) -> Built:
    """The base head with its brain imaged by the subject's own intensities (the embedded dataset's, from the MNI152
    template: real partial volume and contrast within each tissue, not one Gaussian per label), scaled so its white
    matter median is the base image's, with the base head's Rician noise added; everything outside the brain as is."""
    if base.brain_image is None:
        raise ValueError(f"Expected the brain's own image for the {TEMPLATE_BRAIN!r} variant of {base.name}. Received: none")
    labels = np.asarray(base.labels.array)
    inside = head_brain_mask(labels)
    own = _placed(base.brain_image, base.labels)
    white = labels == WHITE_MATTER
    scale = float(np.median(base.image.array[white])) / max(float(np.median(own[white])), 1e-6)
    sigma = ht.mean_head_intensity(base.image, base.labels) / base.snr
    real = own[inside] * scale + rng.normal(0.0, sigma, int(inside.sum()))
    image = np.array(base.image.array, np.float32)
    image[inside] = np.hypot(real, rng.normal(0.0, sigma, real.shape))
    return Image(image, base.image.affine), base.labels, {"snr": base.snr, "white_matter_scale": scale}


def _placed(image: Image, onto: LabelMap) -> np.ndarray:
    """``image``'s values on ``onto``'s grid, which holds it whole on the same voxels (a head's grid grows the brain's
    by whole voxels); 0 elsewhere."""
    shift = np.linalg.solve(onto.affine, image.affine)
    offset = np.round(shift[:3, 3]).astype(int)
    aligned = np.allclose(shift[:3, :3], np.eye(3), atol=1e-4) and np.allclose(shift[:3, 3], offset, atol=1e-3)
    if not aligned or np.any(offset < 0) or np.any(offset + np.asarray(image.shape) > np.asarray(onto.shape)):
        raise ValueError(f"Expected the brain's image on the head's voxels. Received: image grid {image.shape} at voxel offset {shift[:3, 3]}")
    placed = np.zeros(onto.shape, np.float32)
    placed[tuple(slice(o, o + n) for o, n in zip(offset, image.shape))] = image.array
    return placed


def _check_brain_image(brain: LabelMap, image: Image | None) -> None:
    if image is None:
        raise ValueError(f"Expected brain_image for the {TEMPLATE_BRAIN!r} variant. Received: none")
    if image.shape != brain.shape or not np.allclose(image.affine, brain.affine, atol=1e-6):
        raise ValueError(f"Expected brain_image on the brain's grid {brain.shape}. Received: {image.shape}")


_BUILDERS: dict[str, Callable[[_Base, np.random.Generator], Built]] = {
    "as-is": _as_is, "1x1x5 axial": _thick(2), "1x1x5 sagittal": _thick(0), "1x1x5 coronal": _thick(1), "0.5 mm": _fine,
    "child 0.8x": _child(0.8), "child 0.65x": _child(0.65), "rotated 20deg": _rotated, "bias +-40%": _biased,
    "Rician SNR 10": _rician(10.0), "Rician SNR 5": _rician(5.0), "gamma 0.5": _gamma(0.5), "gamma 2": _gamma(2.0),
    "cropped top": _cropped_top, "T2-like": _t2_like, "noise": _noise, "empty": _empty, "template brain": _template_brain,
    "child zero air": _child_zero_air,
}  # fmt: skip


def _checked_variants(variants: Sequence[str], seed: int) -> tuple[str, ...]:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"Expected seed as an integer >= 0. Received: seed={seed!r}")
    if isinstance(variants, str) or not isinstance(variants, Sequence) or not variants:
        raise ValueError(f"Expected variants as a non-empty sequence of names from VARIANTS. Received: variants={variants!r}")
    unknown = [v for v in variants if v not in _BUILDERS]
    if unknown:
        raise ValueError(f"Expected variant names among {VARIANTS}. Received: unknown {unknown}")
    if len(set(variants)) != len(variants):
        raise ValueError(f"Expected each variant once. Received: variants={list(variants)}")
    return tuple(variants)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _safe(text: str) -> str:
    """A file-name safe form: ``bias +-40%`` -> ``bias-pm40pct``, ``0.5 mm`` -> ``0.5-mm``."""
    text = text.replace("+-", "pm").replace("%", "pct")
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")
