"""The embedded dataset: brain subjects synthesised from the MNI152 2009 template shipped inside nilearn.

Nothing is downloaded: nilearn reads the template (ICBM 2009a symmetric: skull-stripped T1, gray-
and white-matter probability maps; brain mask = T1 > 0.2) from its own package files. Being
symmetric, its left and right halves mirror each other: a left/right flip cannot be seen in its
anatomy. Arrays are indexed (i, j, k); every affine maps voxels to RAS+ world millimetres of MNI
space, so world points keep their anatomy.

Label rule (stored values of the ``TISSUE`` label set): 0 outside the brain mask; inside it, the
argmax of (CSF = max(0, 1 - GM - WM), GM, WM), ties going to the tissue listed later (WM over GM
over CSF).

Synthesis recipe of subject ``index``, seeded by ``np.random.default_rng([seed, index])``:

1. Shape: one smooth transform pulls the T1, GM, WM and mask maps alike (linear interpolation,
   template voxel coordinates): an affine about the brain centre (rotation, per-axis scale, shear,
   translation) plus a cubic B-spline elastic field (random normal displacements on control points
   every ``elastic_spacing_mm``, scaled to a peak of about ``elastic_sigma_mm``). Labels follow from
   the warped maps by the rule above, so they agree with the image voxel for voxel.
2. Scanner: per-tissue contrast jitter (1 +- ``contrast_jitter``, weighted by the tissue
   probabilities), gamma ``exp(N(0, gamma_log_std))`` about the white-matter median, and a smooth
   multiplicative bias field of log-amplitude ``bias_field_strength``.
3. Grid: a fixed share ``resampled_fraction`` of the subjects (picked from ``seed``, see
   `resampled_indices`) is stored on another native grid, with a voxel size from
   `NATIVE_VOXEL_SIZES` (times the template voxel size) and an axis order from
   `NATIVE_ORIENTATIONS`, covering the same field of view (image linear, labels nearest). The others
   stay on the template grid (RAS+, ``template_voxel_size``).
4. Noise: Rician noise of std ``noise_std`` times the white-matter median, added last on the native
   grid inside the brain; outside it every voxel is exactly 0, as a skull-stripping tool writes a brain
   (inference recognises a stripped input by those zeros: `inference.extraction.stripped_brain`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np
from scipy import ndimage

from brainseg_tf.config import EmbeddedDatasetConfig
from brainseg_tf.datasets.cache import Split
from brainseg_tf.errors import ConfigError
from brainseg_tf.fields import SmoothField, bias_field
from brainseg_tf.geometry import CANONICAL_AXCODES, VOXEL_SIZE_TOLERANCE, conform
from brainseg_tf.io import Image, LabelMap, Volume
from brainseg_tf.labels import TISSUE

logger = logging.getLogger(__name__)

RECIPE_VERSION = 2  # 2: exact zeros outside the brain (1: noise everywhere)
"""Version of the synthesis code: bump it when the same recipe would give other subjects, so caches rebuild."""
NATIVE_VOXEL_SIZES: tuple[tuple[float, float, float], ...] = ((1.2, 1.2, 1.2), (0.9, 0.9, 1.5), (1.0, 1.0, 2.0))
"""Voxel sizes of resampled subjects along their stored array axes, in units of the template voxel size."""
NATIVE_ORIENTATIONS: tuple[str, ...] = ("LAS", "LPS", "LIA", "PIL")
"""Axis codes (nibabel) of resampled subjects' arrays; none is the template's RAS."""

_CSF, _GRAY, _WHITE = (TISSUE.values[TISSUE.class_index(name)] for name in ("CSF", "gray matter", "white matter"))


@dataclass(frozen=True, eq=False)
class Template:
    """The MNI152 2009a template (or any stand-in) on one isotropic RAS+ grid.

    Attributes:
        image: skull-stripped T1, float32 in [0, 1], with the grid's affine.
        gray_matter: float32 gray-matter probabilities on the same grid.
        white_matter: float32 white-matter probabilities on the same grid.
        brain_mask: bool brain mask on the same grid.
    """

    image: Image
    gray_matter: np.ndarray
    white_matter: np.ndarray
    brain_mask: np.ndarray

    def __post_init__(self) -> None:
        for name in ("gray_matter", "white_matter", "brain_mask"):
            shape = getattr(self, name).shape
            if shape != self.image.shape:
                raise ValueError(f"Expected {name} on the image grid {self.image.shape}. Received: shape={shape}")


def load_template(voxel_size: float = 1.0) -> Template:
    """Load the MNI152 2009 T1, GM/WM probability maps and brain mask shipped with nilearn.

    Args:
        voxel_size: isotropic edge length in mm, at least the template's own 1 mm. Coarser grids
            are made by `brainseg_tf.geometry.conform` (linear for image and probabilities; the
            mask is the resampled mask above 0.5).

    Returns:
        The template on a RAS+ grid covering the MNI field of view.

    Raises:
        ValueError: ``voxel_size`` below 1 mm or not finite.
        ImportError: nilearn is not installed.
    """
    if not np.isfinite(voxel_size) or voxel_size < 1.0:
        raise ValueError(f"Expected voxel_size >= 1.0 mm (the template's own resolution). Received: voxel_size={voxel_size}")
    try:
        from nilearn import datasets  # imported here: slow to import and only needed to build the dataset
    except ImportError:
        raise ImportError("The embedded dataset needs nilearn: pip install 'brainseg-tf[data]'") from None

    sources = {
        "image": datasets.load_mni152_template(resolution=1),
        "gray_matter": datasets.load_mni152_gm_template(resolution=1),
        "white_matter": datasets.load_mni152_wm_template(resolution=1),
        "brain_mask": datasets.load_mni152_brain_mask(resolution=1),
    }
    coarse = {}
    for name, source in sources.items():
        volume = Image(np.array(source.dataobj, dtype=np.float32), source.affine)  # a copy: nilearn caches its images
        coarse[name], _ = conform(volume, voxel_size)  # probability maps and the mask too: averaged, then thresholded
    logger.debug("MNI152 template at %.2f mm: shape %s", voxel_size, coarse["image"].shape)
    return Template(
        image=coarse["image"],
        gray_matter=coarse["gray_matter"].array,
        white_matter=coarse["white_matter"].array,
        brain_mask=coarse["brain_mask"].array > 0.5,
    )


def tissue_labels(gray_matter: np.ndarray, white_matter: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """Stored ``TISSUE`` values (0 background, 1 CSF, 2 GM, 3 WM) from probability maps.

    Outside the mask: 0. Inside: the argmax of (CSF = max(0, 1 - GM - WM), GM, WM), ties going to
    the tissue listed later (WM over GM over CSF).

    Returns:
        uint8 array of the maps' shape.

    Raises:
        ValueError: the three arrays differ in shape.
    """
    gray = np.asarray(gray_matter, dtype=np.float32)
    white = np.asarray(white_matter, dtype=np.float32)
    mask = np.asarray(brain_mask, dtype=bool)
    if not gray.shape == white.shape == mask.shape:
        raise ValueError(
            f"Expected gray_matter, white_matter and brain_mask of one shape. "
            f"Received: {gray.shape}, {white.shape}, {mask.shape}"
        )
    csf = np.maximum(0.0, 1.0 - gray - white)
    white_wins = (white >= gray) & (white >= csf)
    gray_wins = ~white_wins & (gray >= csf)
    labels = np.full(gray.shape, _CSF, dtype=np.uint8)
    labels[gray_wins] = _GRAY
    labels[white_wins] = _WHITE
    labels[~mask] = 0
    return labels


def subject_ids(config: EmbeddedDatasetConfig) -> list[tuple[str, Split]]:
    """Ids and splits of the embedded subjects: ``mni-000``, ``mni-001``, ... in index order.

    The first ``n_train`` are train, the next ``n_val`` val, the last ``n_test`` test.

    Raises:
        ConfigError: a recipe value out of range.
    """
    _check_config(config)
    splits: list[Split] = ["train"] * config.n_train + ["val"] * config.n_val + ["test"] * config.n_test
    width = max(3, len(str(len(splits) - 1)))
    return [(f"mni-{index:0{width}d}", split) for index, split in enumerate(splits)]


def resampled_indices(config: EmbeddedDatasetConfig) -> frozenset[int]:
    """Indices of the subjects stored on another native grid: ``resampled_fraction`` of all, rounded.

    Drawn from a stream of ``config.seed`` apart from every subject's own ``[seed, index]`` stream.
    """
    total = _check_config(config)
    count = int(np.floor(config.resampled_fraction * total + 0.5))
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1,)))
    return frozenset(int(i) for i in rng.permutation(total)[:count])


def synthesize_subject(template: Template, index: int, config: EmbeddedDatasetConfig) -> tuple[Image, LabelMap]:
    """Synthesise subject ``index`` by the module's recipe; the same seed gives identical arrays.

    Args:
        template: from ``load_template(config.template_voxel_size)``.
        index: subject index, in ``[0, n_train + n_val + n_test)``.
        config: the recipe.

    Returns:
        (T1 image, float32; label map of stored ``TISSUE`` values, int32), one native grid and affine.

    Raises:
        ConfigError: a recipe value out of range.
        ValueError: index out of range, or a template at another voxel size than the recipe's.
    """
    check_subject_request(template, index, config)
    shape_rng, scanner_rng, grid_rng, noise_rng = np.random.default_rng([config.seed, int(index)]).spawn(4)
    reached, (t1, gray, white, mask) = _warp_template(template, shape_rng, config)
    labels = np.zeros(template.image.shape, dtype=np.int32)
    labels[reached] = tissue_labels(gray, white, mask > 0.5)
    image = np.zeros(template.image.shape, dtype=np.float32)
    image[reached] = _vary_scanner(t1, gray, white, mask, labels[reached], scanner_rng, config)
    image *= bias_field(template.image.shape, scanner_rng, config.bias_field_strength)
    image_volume, label_volume = template.image.with_array(image), LabelMap(labels, template.image.affine)
    if index in resampled_indices(config):
        image_volume, label_volume = store_on_native_grid(image_volume, label_volume, grid_rng, config.template_voxel_size)
    noisy = add_rician_noise(image_volume.array, label_volume.array, noise_rng, config.noise_std)
    return image_volume.with_array(np.where(label_volume.array > 0, noisy, np.float32(0.0))), label_volume


def check_subject_request(template: Template, index: int, config: EmbeddedDatasetConfig) -> None:
    """Check the arguments of a subject synthesis: the recipe, the index and the template's voxel size.

    Raises:
        ConfigError: a recipe value out of range.
        ValueError: index out of range, or a template at another voxel size than the recipe's.
    """
    total = _check_config(config)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < total:
        raise ValueError(f"Expected index an integer in [0, {total - 1}]. Received: index={index!r}")
    template_voxel = template.image.voxel_size
    if np.any(np.abs(template_voxel - config.template_voxel_size) > VOXEL_SIZE_TOLERANCE):
        raise ValueError(
            f"Expected a template at data.embedded.template_voxel_size={config.template_voxel_size} mm. "
            f"Received: voxel size {tuple(np.round(template_voxel, 4))}"
        )


def _random_affine(rng: np.random.Generator, config: EmbeddedDatasetConfig, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, translation in voxels) of a random affine: rotation @ shear @ scale."""
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * config.max_rotation_deg)
    scales = 1 + rng.uniform(-1, 1, 3) * config.max_scale
    shears = rng.uniform(-1, 1, 3) * config.max_shear
    translation = rng.uniform(-1, 1, 3) * config.max_translation_mm / voxel_size
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        plane = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[np.ix_(plane, plane)] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        rotation = rotation @ turn
    shear = np.eye(3)
    shear[np.triu_indices(3, k=1)] = shears
    return rotation @ shear @ np.diag(scales), translation


def pull_coordinates(template: Template, rng: np.random.Generator, config: EmbeddedDatasetConfig) -> np.ndarray:
    """Draw a subject's smooth shape transform and return where each of its voxels samples the template.

    Output voxel x samples the template at ``A (x - c) + c + t + elastic(x)`` (template voxel
    coordinates, c the brain centre): an affine (rotation, per-axis scale, shear, translation) and a
    cubic B-spline elastic field, drawn from ``rng`` in that order. Subject ``index`` draws it from the
    first of ``np.random.default_rng([seed, index]).spawn(4)``, so every dataset that pulls its maps
    through these coordinates (tissue, `brainseg_tf.datasets.structures`) gets the same subject shape.

    Args:
        template: the template whose grid (shape, voxel size, brain centre) the transform lives on.
        rng: the subject's shape generator.
        config: the recipe's deformation ranges.

    Returns:
        float32 array (3, I, J, K): template voxel coordinates (i, j, k) sampled by each voxel of the grid.
    """
    shape = template.image.shape
    voxel = float(template.image.voxel_size.mean())
    matrix, translation = _random_affine(rng, config, voxel)
    elastic = SmoothField.random(rng, shape, config.elastic_spacing_mm / voxel, channels=3)
    elastic = elastic.scaled_to_peak(config.elastic_sigma_mm / voxel, shape)
    centre = np.asarray(ndimage.center_of_mass(template.brain_mask))
    pull = elastic.plus_affine(matrix, centre + translation - matrix @ centre)
    return pull.evaluate([np.arange(n, dtype=np.float32) for n in shape])


def _warp_template(template: Template, rng: np.random.Generator, config: EmbeddedDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pull T1, GM, WM and mask through one random smooth transform (template voxel coordinates).

    Output voxel x samples the template at ``A (x - c) + c + t + elastic(x)``, c the brain centre.
    Only voxels whose sample point lies next to a non-zero template voxel are interpolated (about
    a quarter of the grid). Points beyond the template grid take its edge values: the MNI field of
    view cuts through the brain stem, which so continues instead of ending in a flat cut.

    Returns:
        (bool mask of those voxels on the template grid, (4, count) float32 warped T1, GM, WM, mask
        there); everywhere else all four are zero.
    """
    coordinates = pull_coordinates(template, rng, config)
    sources = [template.image.array, template.gray_matter, template.white_matter, template.brain_mask.astype(np.float32)]
    nonzero = np.logical_or.reduce([source != 0 for source in sources])
    near_nonzero = ndimage.maximum_filter(nonzero.view(np.uint8), size=3)  # what linear interpolation can reach
    reached = ndimage.map_coordinates(near_nonzero, coordinates, order=0, mode="nearest").view(bool)
    points = coordinates[:, reached]
    warped = [ndimage.map_coordinates(s, points, order=1, mode="nearest", prefilter=False) for s in sources]
    return reached, np.stack(warped)


def _vary_scanner(
    t1: np.ndarray,
    gray: np.ndarray,
    white: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    config: EmbeddedDatasetConfig,
) -> np.ndarray:
    """Per-tissue contrast and gamma about the white-matter median, on matching arrays of voxels (float32)."""
    csf_change, gray_change, white_change = rng.uniform(-1, 1, 3) * config.contrast_jitter
    csf = np.clip(mask - gray - white, 0, 1)
    image = t1 * (1 + np.float32(csf_change) * csf + np.float32(gray_change) * gray + np.float32(white_change) * white)
    gamma = np.float32(np.exp(rng.normal(0.0, config.gamma_log_std)))
    reference = white_matter_median(image, labels)
    return (reference * (image / reference) ** gamma).astype(np.float32)


def store_on_native_grid(
    image: Image, labels: LabelMap, rng: np.random.Generator, template_voxel_size: float
) -> tuple[Image, LabelMap]:
    """Resample to a random native voxel size and axis order over the same field of view."""
    sizes = np.asarray(NATIVE_VOXEL_SIZES[rng.integers(len(NATIVE_VOXEL_SIZES))]) * template_voxel_size
    axcodes = NATIVE_ORIENTATIONS[rng.integers(len(NATIVE_ORIENTATIONS))]
    native = nio.axcodes2ornt(axcodes)
    ras_sizes = np.empty(3)
    ras_sizes[native[:, 0].astype(int)] = sizes  # array axis k runs along world axis native[k, 0]
    image, _ = conform(image, tuple(ras_sizes))
    labels, _ = conform(labels, tuple(ras_sizes))
    transform = nio.ornt_transform(nio.axcodes2ornt(CANONICAL_AXCODES), native)
    logger.debug("native grid %s, voxel size %s mm", axcodes, tuple(sizes))
    return _reoriented(image, transform), _reoriented(labels, transform)


def _reoriented(volume: Volume, transform: np.ndarray) -> Volume:
    """Permute/flip the array's axes by a nibabel orientation transform, keeping world positions."""
    array = nio.apply_orientation(volume.array, transform)
    affine = volume.affine @ nio.inv_ornt_aff(transform, volume.shape)
    return type(volume)(np.ascontiguousarray(array), affine)


def add_rician_noise(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of std ``noise_std`` x white-matter median."""
    sigma = np.float32(noise_std * white_matter_median(image, labels))
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def white_matter_median(image: np.ndarray, labels: np.ndarray) -> np.float32:
    """Median intensity of white-matter voxels (of the largest intensity when there are none)."""
    white = image[labels == _WHITE]
    return np.float32(np.median(white) if white.size else max(float(image.max()), 1e-6))


_NON_NEGATIVE_KEYS = (
    "max_rotation_deg",
    "max_shear",
    "max_translation_mm",
    "elastic_sigma_mm",
    "bias_field_strength",
    "gamma_log_std",
    "noise_std",
)


def _check_config(config: EmbeddedDatasetConfig) -> int:
    """Validate the recipe; return the number of subjects.

    Raises:
        ConfigError: naming the first value out of range.
    """
    rules = [
        *((name, "an integer >= 0", lambda v: isinstance(v, int) and v >= 0) for name in ("n_train", "n_val", "n_test")),
        ("template_voxel_size", ">= 1.0 mm", lambda v: v >= 1.0),
        ("max_scale", "in [0, 1)", lambda v: 0 <= v < 1),
        ("contrast_jitter", "in [0, 1)", lambda v: 0 <= v < 1),
        ("resampled_fraction", "in [0, 1]", lambda v: 0 <= v <= 1),
        ("elastic_spacing_mm", "> 0", lambda v: v > 0),
        *((name, ">= 0", lambda v: v >= 0) for name in _NON_NEGATIVE_KEYS),
    ]
    for name, expected, accepts in rules:
        value = getattr(config, name)
        if not (np.isfinite(value) and accepts(value)):
            raise ConfigError(f"Expected data.embedded.{name} {expected}. Received: {value!r}")
    total = config.n_train + config.n_val + config.n_test
    if total < 1:
        raise ConfigError("Expected at least one embedded subject. Received: n_train + n_val + n_test = 0")
    return total
