"""Training images synthesised from label maps: a random contrast per label, then bias, gamma, resolution loss and Rician noise.

In the spirit of SynthSeg (Billot et al. 2023) and SynthStrip (Hoopes et al. 2022): every label of a
label map gets a random intensity distribution per sample, so a network learns anatomy, not one
template's intensities. The module knows no label table: the caller passes one `IntensityPrior` per
label value, on a T1-like scale where white matter is about 1.

Arrays are indexed (i, j, k) on a RAS+ grid; voxel sizes are in mm along those array axes (isotropic
or not). Every random draw comes from the `numpy.random.Generator` passed in. Images are float32 and
never negative; they are not normalised here (the input contract normalises at its own stage).

Recipe of `synthesize_image`; each stage draws from its own child of the sample's generator
(``rng.spawn(5)``), so changing one stage does not shift the others' draws:

1. Contrast (`draw_label_intensities`): per label a mean and a std, from the T1-like priors with
   probability ``prior_probability``, else a contrast unrelated to T1; Gaussian voxel values, part of
   their variance spatially smooth.
2. Bias (`apply_bias_field`): a smooth multiplicative field of log-amplitude drawn from
   ``bias_strength_range`` (the coil's sensitivity acts on the object, before acquisition).
3. Gamma (`apply_gamma`): ``exp(N(0, gamma_log_std))`` clipped to ``gamma_range``, about the mean
   foreground intensity, so the overall scale stays.
4. Resolution (`degrade_resolution`): thick slices along a random axis with probability
   ``thick_slice_probability`` (blur matched to the acquired voxel, subsample, linear upsample), else
   a mild partial-volume blur.
5. Noise (`add_rician_noise`): Rician, with an SNR (mean foreground / noise std) drawn log-uniformly
   from ``snr_range``, added last on the canvas grid.

Foreground is every voxel whose label is not `BACKGROUND_LABEL` (0, air by the project's convention).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainseg_tf.config import SynthesisConfig
from brainseg_tf.data.augmentation import gaussian_noise
from brainseg_tf.fields import SmoothField, bias_field
from brainseg_tf.errors import ConfigError

logger = logging.getLogger(__name__)

BACKGROUND_LABEL = 0
"""Label value outside the head: left out of the mean foreground intensity (gamma and noise reference)."""
MAX_LABEL = 65535
"""Largest accepted label value: intensities are looked up in a table indexed by label value."""
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # 0.4247: a Gaussian whose FWHM is one acquired voxel
_BLUR_TRUNCATE = 3.0  # Gaussian kernels cut at 3 sigma: 0.3 % of the weight, a quarter fewer taps than scipy's 4

__all__ = [
    "Acquisition",
    "IntensityPrior",
    "LabelContrast",
    "add_rician_noise",
    "apply_bias_field",
    "apply_gamma",
    "check_synthesis_config",
    "degrade_resolution",
    "draw_acquisition",
    "draw_contrast",
    "draw_label_intensities",
    "simulate_acquisition",
    "synthesize_image",
    "unit_smooth_field",
]


@dataclass(frozen=True)
class IntensityPrior:
    """Where one label's intensity distribution is drawn from, on a T1-like scale (white matter about 1).

    Attributes:
        mean_range: (low, high) the label's mean is drawn uniformly from.
        std_range: (low, high) its within-label standard deviation is drawn uniformly from.

    Raises:
        ValueError: a range that is not two finite numbers with 0 <= low <= high.
    """

    mean_range: tuple[float, float]
    std_range: tuple[float, float]

    def __post_init__(self) -> None:
        for name in ("mean_range", "std_range"):
            value = getattr(self, name)
            if not _is_range(value):
                expected = "as (low, high) with 0 <= low <= high"
                raise ValueError(f"Expected IntensityPrior.{name} {expected}. Received: {name}={value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))


@dataclass(frozen=True)
class LabelContrast:
    """The intensity distribution drawn for each label of one sample.

    Attributes:
        values: label values, ascending.
        means: mean intensity of each label, in the order of ``values``.
        stds: within-label standard deviation of each label.
        t1_like: True when drawn from the T1-like priors, False for a contrast unrelated to T1.
    """

    values: tuple[int, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    t1_like: bool


@dataclass(frozen=True)
class Acquisition:
    """One simulated acquisition, along the canvas's array axes.

    Attributes:
        voxel_size: acquired voxel size in mm; axes at or below the canvas voxel size are not subsampled.
        blur_sigma: Gaussian sigma applied along each axis, in canvas voxels.
        offset: position of the first acquired sample, as a fraction of an acquired voxel, in [0, 1).
    """

    voxel_size: tuple[float, float, float]
    blur_sigma: tuple[float, float, float]
    offset: tuple[float, float, float]


def check_synthesis_config(config: SynthesisConfig) -> None:
    """Check synthesis settings.

    Raises:
        ConfigError: a setting outside its accepted range, named in the message.
    """
    rules = [
        *((name, "a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1) for name in _PROBABILITIES),
        ("smooth_variation_spacing_mm", "a number > 0", lambda v: _is_number(v) and v > 0),
        ("gamma_log_std", "a number >= 0", lambda v: _is_number(v) and v >= 0),
        *((name, "(low, high) with 0 <= low <= high", _is_range) for name in _NON_NEGATIVE_RANGES),
        *((name, "(low, high) with 0 < low <= high", lambda v: _is_range(v) and v[0] > 0) for name in _POSITIVE_RANGES),
    ]
    for name, expected, accepts in rules:
        value = getattr(config, name)
        if not accepts(value):
            raise ConfigError(f"Expected generator.synthesis.{name} {expected}. Received: {name}={value!r}")


_PROBABILITIES = ("prior_probability", "smooth_variation_fraction", "thick_slice_probability")
_NON_NEGATIVE_RANGES = ("random_mean_range", "random_std_range", "partial_volume_sigma_range", "bias_strength_range")
_POSITIVE_RANGES = ("slice_thickness_range_mm", "in_plane_voxel_range_mm", "gamma_range", "snr_range")


def synthesize_image(
    labels: np.ndarray,
    voxel_size: tuple[float, float, float],
    priors: Mapping[int, IntensityPrior],
    rng: np.random.Generator,
    config: SynthesisConfig,
) -> np.ndarray:
    """Synthesise one training image from a label map by the module's recipe (see the module docstring).

    Args:
        labels: (I, J, K) integer label map on a RAS+ grid, values in [0, `MAX_LABEL`].
        voxel_size: mm along array axes (i, j, k).
        priors: an `IntensityPrior` for every label value present in ``labels``.
        rng: the sample's generator; the same seed gives the same image.
        config: ranges and probabilities.

    Returns:
        float32 image of the label map's shape, finite and non-negative, not normalised.

    Raises:
        ValueError: bad labels or voxel size, or labels without a prior (named).
        ConfigError: a setting out of range (named).
    """
    check_synthesis_config(config)
    labels = _checked_labels(labels)
    canvas = _checked_voxel_size(voxel_size)
    contrast_rng, bias_rng, gamma_rng, resolution_rng, noise_rng = rng.spawn(5)
    image = _label_intensities(labels, priors, contrast_rng, config, canvas)
    image = apply_bias_field(image, float(bias_rng.uniform(*config.bias_strength_range)), bias_rng)
    foreground = labels != BACKGROUND_LABEL
    gamma = float(np.clip(np.exp(gamma_rng.normal(0.0, config.gamma_log_std)), *config.gamma_range))
    image = apply_gamma(image, gamma, _mean_intensity(image, foreground))
    image = degrade_resolution(image, canvas, resolution_rng, config)
    snr = float(np.exp(noise_rng.uniform(*np.log(config.snr_range))))
    logger.debug("synthesised: gamma %.2f, SNR %.1f", gamma, snr)
    return add_rician_noise(image, snr, noise_rng, foreground)


def draw_contrast(
    values: Sequence[int], priors: Mapping[int, IntensityPrior], rng: np.random.Generator, config: SynthesisConfig
) -> LabelContrast:
    """Draw a mean and a std per label: all from the priors (probability ``prior_probability``) or all random.

    Random contrasts draw every mean uniformly from ``random_mean_range`` and every std from
    ``random_std_range``, independently of the priors, so no intensity ordering holds between labels.

    Args:
        values: label values to draw for (duplicates ignored).
        priors: an `IntensityPrior` per label value.
        rng: random generator.
        config: probabilities and ranges.

    Raises:
        ValueError: values without a prior, named.
        TypeError: a prior that is not an `IntensityPrior`.
    """
    values = sorted({int(v) for v in values})
    missing = [v for v in values if v not in priors]
    if missing:
        raise ValueError(f"Expected an IntensityPrior for every label in the label map. Missing labels: {missing}")
    wrong = [v for v in values if not isinstance(priors[v], IntensityPrior)]
    if wrong:
        received = type(priors[wrong[0]]).__name__
        raise TypeError(f"Expected IntensityPrior values in priors. Received: {received} for label {wrong[0]}")
    t1_like = bool(rng.random() < config.prior_probability)
    if t1_like:
        mean_ranges = np.array([priors[v].mean_range for v in values]).reshape(-1, 2)
        std_ranges = np.array([priors[v].std_range for v in values]).reshape(-1, 2)
    else:
        mean_ranges = np.tile(config.random_mean_range, (len(values), 1))
        std_ranges = np.tile(config.random_std_range, (len(values), 1))
    means = rng.uniform(mean_ranges[:, 0], mean_ranges[:, 1])
    stds = rng.uniform(std_ranges[:, 0], std_ranges[:, 1])
    return LabelContrast(tuple(values), tuple(means.tolist()), tuple(stds.tolist()), t1_like)


def draw_label_intensities(
    labels: np.ndarray,
    priors: Mapping[int, IntensityPrior],
    rng: np.random.Generator,
    config: SynthesisConfig,
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Image of Gaussian intensities per label, from one `draw_contrast`, clipped at 0.

    A share ``smooth_variation_fraction`` of every label's variance is one smooth field (cubic B-spline,
    control points every ``smooth_variation_spacing_mm``), the rest white; each voxel keeps its label's std.

    Args:
        labels: (I, J, K) integer label map, values in [0, `MAX_LABEL`].
        priors: an `IntensityPrior` for every label value present.
        rng: random generator.
        config: probabilities and ranges.
        voxel_size: mm along array axes (i, j, k); sets the smooth field's spacing in voxels.

    Returns:
        float32 image of the label map's shape, non-negative.

    Raises:
        ValueError: bad labels or voxel size, or labels without a prior (named).
        ConfigError: a setting out of range (named).
    """
    check_synthesis_config(config)
    return _label_intensities(_checked_labels(labels), priors, rng, config, _checked_voxel_size(voxel_size))


def _label_intensities(
    labels: np.ndarray, priors: Mapping[int, IntensityPrior], rng: np.random.Generator, config: SynthesisConfig, canvas: np.ndarray
) -> np.ndarray:
    """`draw_label_intensities` on arguments already checked."""
    present = np.flatnonzero(np.bincount(labels.ravel()))
    contrast = draw_contrast(present, priors, rng, config)
    mean_table = np.zeros(present[-1] + 1, dtype=np.float32)
    std_table = np.zeros_like(mean_table)
    mean_table[present], std_table[present] = contrast.means, contrast.stds
    variation = gaussian_noise(rng, labels.shape)
    fraction = config.smooth_variation_fraction
    if fraction > 0:
        smooth = unit_smooth_field(labels.shape, config.smooth_variation_spacing_mm / float(canvas.min()), rng)
        variation = np.float32(np.sqrt(1 - fraction)) * variation + np.float32(np.sqrt(fraction)) * smooth
    image = np.take(std_table, labels)
    image *= variation
    image += np.take(mean_table, labels)
    return np.maximum(image, 0.0, out=image)


def apply_bias_field(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply by a smooth field ``exp(strength * f)``, f a coarse cubic B-spline field with peak |f| about 1.

    The field is `brainseg_tf.fields.bias_field`: control points every half field of view, scaled to
    peak |f| = 1 on a sub-grid, so the true peak may pass 1 by a few percent.

    Args:
        image: (I, J, K) float image.
        strength: log-amplitude, >= 0 (0.4: factors between 0.67 and 1.49).
        rng: random generator.

    Returns:
        float32 image.
    """
    if not (np.isfinite(strength) and strength >= 0):
        raise ValueError(f"Expected strength >= 0 (a log-amplitude). Received: strength={strength!r}")
    return np.asarray(image, dtype=np.float32) * bias_field(image.shape, rng, strength)


def apply_gamma(image: np.ndarray, gamma: float, reference: float) -> np.ndarray:
    """``reference * (image / reference) ** gamma``: a contrast change that keeps ``reference`` in place.

    Args:
        image: non-negative float image.
        gamma: exponent, > 0.
        reference: intensity kept fixed (e.g. the mean foreground intensity); <= 0 leaves the image as is.

    Returns:
        float32 image.
    """
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"Expected gamma > 0. Received: gamma={gamma!r}")
    out = np.multiply(image, np.float32(1.0 / reference) if reference > 0 else np.float32(1.0), dtype=np.float32)
    np.power(out, np.float32(gamma), out=out)
    out *= np.float32(reference if reference > 0 else 1.0)
    return out


def degrade_resolution(
    image: np.ndarray, voxel_size: tuple[float, float, float], rng: np.random.Generator, config: SynthesisConfig
) -> np.ndarray:
    """Simulate a random acquisition (`draw_acquisition`) and bring it back to the input grid (`simulate_acquisition`).

    Args:
        image: (I, J, K) float image on a RAS+ grid.
        voxel_size: mm along array axes (i, j, k).
        rng: random generator.
        config: probabilities and ranges.

    Returns:
        float32 image of the input's shape.
    """
    check_synthesis_config(config)
    return simulate_acquisition(image, voxel_size, draw_acquisition(voxel_size, rng, config))


def draw_acquisition(voxel_size: tuple[float, float, float], rng: np.random.Generator, config: SynthesisConfig) -> Acquisition:
    """Draw a thick-slice acquisition (probability ``thick_slice_probability``) or a mild partial-volume blur.

    Thick slices: a random axis gets a thickness from ``slice_thickness_range_mm``, the two others one
    in-plane size from ``in_plane_voxel_range_mm``; no axis gets finer than the canvas. Axes coarser than
    the canvas are blurred with sigma ``0.4247 * acquired / canvas`` voxels (FWHM of one acquired voxel,
    as SynthSeg), the others with one sigma from ``partial_volume_sigma_range`` (canvas voxels).

    Args:
        voxel_size: canvas voxel size, mm along array axes (i, j, k).
        rng: random generator.
        config: probabilities and ranges.
    """
    canvas = _checked_voxel_size(voxel_size)
    mild = rng.uniform(*config.partial_volume_sigma_range)
    acquired = canvas.copy()
    if rng.random() < config.thick_slice_probability:
        axis = int(rng.integers(3))
        acquired = np.full(3, rng.uniform(*config.in_plane_voxel_range_mm))
        acquired[axis] = rng.uniform(*config.slice_thickness_range_mm)
        acquired = np.maximum(acquired, canvas)
    sigma = np.where(acquired > canvas * (1 + 1e-6), FWHM_TO_SIGMA * acquired / canvas, mild)
    offset = rng.uniform(0.0, 1.0, 3)
    return Acquisition(tuple(acquired.tolist()), tuple(sigma.tolist()), tuple(offset.tolist()))


def simulate_acquisition(image: np.ndarray, voxel_size: tuple[float, float, float], acquisition: Acquisition) -> np.ndarray:
    """Blur along each axis, subsample axes acquired coarser than the canvas, and upsample them back linearly.

    Args:
        image: (I, J, K) float image on the canvas grid.
        voxel_size: canvas voxel size, mm along array axes (i, j, k).
        acquisition: from `draw_acquisition` (or built by hand).

    Returns:
        float32 image of the input's shape.
    """
    canvas = _checked_voxel_size(voxel_size)
    out = _checked_image(image)
    for axis in range(3):
        if acquisition.blur_sigma[axis] > 1e-3:
            out = ndimage.gaussian_filter1d(out, acquisition.blur_sigma[axis], axis=axis, mode="nearest", truncate=_BLUR_TRUNCATE)
        step = acquisition.voxel_size[axis] / canvas[axis]
        if step > 1 + 1e-6:
            start = acquisition.offset[axis] * step
            samples = int(np.floor((out.shape[axis] - 1 - start) / step)) + 1
            low = _linear_take(out, axis, start + step * np.arange(max(samples, 1)))
            out = _linear_take(low, axis, (np.arange(out.shape[axis]) - start) / step)
    return out


def add_rician_noise(
    image: np.ndarray, snr: float, rng: np.random.Generator, foreground: np.ndarray | None = None
) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: ``|image + sigma (n1 + i n2)|``, non-negative.

    Args:
        image: (I, J, K) non-negative float image.
        snr: mean foreground intensity over ``sigma``, the std of each noise component; > 0.
        rng: random generator (normals from `brainseg_tf.data.augmentation.gaussian_noise`).
        foreground: bool mask of the image's shape; None (or an empty mask) uses every voxel.

    Returns:
        float32 image.
    """
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"Expected snr > 0. Received: snr={snr!r}")
    image = _checked_image(image)
    if foreground is not None and np.shape(foreground) != image.shape:
        raise ValueError(f"Expected foreground of the image's shape {image.shape}. Received: shape={np.shape(foreground)}")
    sigma = np.float32(_mean_intensity(image, foreground) / snr)
    real = gaussian_noise(rng, image.shape) * sigma
    real += image
    return np.hypot(real, gaussian_noise(rng, image.shape) * sigma)


def unit_smooth_field(shape: tuple[int, ...], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """A cubic B-spline field of standard normal control values, scaled to unit std over the grid (float32)."""
    field = SmoothField.random(rng, shape, max(spacing, 1.0), channels=1)
    values = field.evaluate([np.arange(n, dtype=np.float32) for n in shape])[0]
    std = float(values.std())
    return values / np.float32(std) if std > 0 else values


def _linear_take(array: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` at fractional ``positions`` (clamped to the ends)."""
    size = array.shape[axis]
    positions = np.clip(positions, 0, size - 1)
    lower = np.floor(positions).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    shape = [1] * array.ndim
    shape[axis] = len(positions)
    weight = (positions - lower).astype(np.float32).reshape(shape)
    low = np.take(array, lower, axis=axis)
    return low + weight * (np.take(array, upper, axis=axis) - low)


def _mean_intensity(image: np.ndarray, foreground: np.ndarray | None) -> float:
    """Mean over ``foreground`` voxels (all voxels when None or empty)."""
    if foreground is not None and foreground.any():
        return float(image.sum(where=foreground, dtype=np.float64) / np.count_nonzero(foreground))
    return float(image.mean(dtype=np.float64))


def _is_number(value: object) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _is_range(value: object) -> bool:
    """True for (low, high): two finite numbers with 0 <= low <= high."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_number(v) for v in value):
        return False
    return 0 <= float(value[0]) <= float(value[1])


def _checked_labels(labels: np.ndarray) -> np.ndarray:
    """The label map as an array, after checking it is 3D, integer and within [0, MAX_LABEL]."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected labels as a non-empty 3D integer array. Received: shape={labels.shape}, dtype={labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > MAX_LABEL:
        raise ValueError(f"Expected label values in [0, {MAX_LABEL}]. Received: values from {low} to {high}")
    return labels


def _checked_image(image: np.ndarray) -> np.ndarray:
    """The image as float32 (no copy when it already is), after checking it is 3D."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"Expected a 3D image. Received: shape={image.shape}")
    return image


def _checked_voxel_size(voxel_size: Sequence[float]) -> np.ndarray:
    """Voxel size as a float64 array of 3 positive finite mm values."""
    try:
        sizes = np.asarray(voxel_size, dtype=np.float64)
    except (TypeError, ValueError):
        sizes = np.array([])
    if sizes.shape != (3,) or not np.all(np.isfinite(sizes)) or not np.all(sizes > 0):
        raise ValueError(f"Expected voxel_size as 3 positive mm values along (i, j, k). Received: voxel_size={voxel_size!r}")
    return sizes
