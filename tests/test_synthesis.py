"""Images synthesised from label maps: seeding, contrast draws, resolution loss, noise level and argument checks."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from brainseg_tf.config import Config, SynthesisConfig, load_config
from brainseg_tf.data.synthesis import (
    Acquisition,
    IntensityPrior,
    add_rician_noise,
    apply_bias_field,
    apply_gamma,
    check_synthesis_config,
    degrade_resolution,
    draw_acquisition,
    draw_contrast,
    draw_label_intensities,
    simulate_acquisition,
    synthesize_image,
)
from brainseg_tf.errors import ConfigError

SHAPE = (32, 32, 32)
AIR, CSF, GRAY, WHITE = 0, 1, 2, 3
PRIORS = {
    AIR: IntensityPrior(mean_range=(0.0, 0.05), std_range=(0.0, 0.01)),
    CSF: IntensityPrior(mean_range=(0.1, 0.35), std_range=(0.01, 0.05)),
    GRAY: IntensityPrior(mean_range=(0.45, 0.7), std_range=(0.01, 0.05)),
    WHITE: IntensityPrior(mean_range=(0.8, 1.05), std_range=(0.01, 0.05)),
}


def toy_head() -> np.ndarray:
    """Nested balls: white matter inside gray matter inside CSF, in air (uint8, 32^3)."""
    radius = np.sqrt(((np.indices(SHAPE) - 15.5) ** 2).sum(axis=0))
    return np.select([radius < 6, radius < 10, radius < 14], [WHITE, GRAY, CSF], AIR).astype(np.uint8)


def neighbour_difference(image: np.ndarray, axis: int) -> float:
    """Mean absolute difference between neighbours along ``axis``: high-frequency energy along it."""
    return float(np.abs(np.diff(image, axis=axis)).mean())


def test_same_seed_gives_the_same_image_and_another_seed_another() -> None:
    labels, config = toy_head(), SynthesisConfig()
    first = synthesize_image(labels, (1.0, 1.0, 1.0), PRIORS, np.random.default_rng(7), config)
    again = synthesize_image(labels, (1.0, 1.0, 1.0), PRIORS, np.random.default_rng(7), config)
    other = synthesize_image(labels, (1.0, 1.0, 1.0), PRIORS, np.random.default_rng(8), config)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1e-3


@pytest.mark.parametrize(
    "overrides, voxel_size, dtype",
    [
        ({}, (1.0, 1.0, 1.0), np.uint8),
        ({"thick_slice_probability": 1.0}, (1.0, 1.0, 1.0), np.int32),
        ({"thick_slice_probability": 1.0, "prior_probability": 0.0}, (0.9, 1.2, 2.0), np.int64),
        ({"smooth_variation_fraction": 0.0, "snr_range": (5.0, 5.0)}, (2.0, 2.0, 2.0), np.uint16),
    ],
)
def test_output_keeps_shape_is_float32_finite_and_non_negative(overrides: dict, voxel_size: tuple, dtype: type) -> None:
    config = dataclasses.replace(SynthesisConfig(), **overrides)
    for seed in range(4):
        image = synthesize_image(toy_head().astype(dtype), voxel_size, PRIORS, np.random.default_rng(seed), config)
        assert image.shape == SHAPE and image.dtype == np.float32
        assert np.all(np.isfinite(image)) and image.min() >= 0.0
        assert image.std() > 0.01  # not flat


def test_prior_contrasts_fall_in_their_ranges_and_keep_the_t1_ordering() -> None:
    labels = toy_head()
    config = SynthesisConfig(prior_probability=1.0, smooth_variation_fraction=0.0)
    means = []
    for seed in range(20):
        contrast = draw_contrast([AIR, CSF, GRAY, WHITE], PRIORS, np.random.default_rng(seed), config)
        image = draw_label_intensities(labels, PRIORS, np.random.default_rng(seed), config)
        assert contrast.t1_like and contrast.values == (AIR, CSF, GRAY, WHITE)
        for value, mean, std in zip(contrast.values, contrast.means, contrast.stds):
            assert PRIORS[value].mean_range[0] <= mean <= PRIORS[value].mean_range[1]
            assert PRIORS[value].std_range[0] <= std <= PRIORS[value].std_range[1]
            measured = image[labels == value]
            assert abs(measured.mean() - mean) < 0.01  # the image is drawn from this contrast (air: clipped at 0)
            if value != AIR:
                assert abs(measured.std() - std) < 0.1 * std + 1e-3
        means.append(contrast.means)
    average = np.mean(means, axis=0)
    assert average[WHITE] > average[GRAY] > average[CSF] > average[AIR]


def test_random_contrasts_break_the_t1_ordering() -> None:
    config = SynthesisConfig(prior_probability=0.0)
    contrasts = [draw_contrast([CSF, GRAY, WHITE], PRIORS, np.random.default_rng(seed), config) for seed in range(40)]
    assert not any(c.t1_like for c in contrasts)
    t1_ordered = [c.means[2] > c.means[1] > c.means[0] for c in contrasts]
    assert 0 < sum(t1_ordered) < 20  # about 1 in 6 by chance
    outside = [m for c in contrasts for m in c.means if not PRIORS[WHITE].mean_range[0] <= m <= PRIORS[WHITE].mean_range[1]]
    assert min(outside) >= 0.0 and max(m for c in contrasts for m in c.means) <= 1.0


def test_smooth_variation_keeps_each_label_std_but_correlates_neighbours() -> None:
    labels = np.full(SHAPE, WHITE, dtype=np.uint8)
    priors = {WHITE: IntensityPrior((0.9, 0.9), (0.05, 0.05))}
    configs = [SynthesisConfig(prior_probability=1.0, smooth_variation_fraction=f) for f in (0.0, 1.0)]
    white, smooth = (draw_label_intensities(labels, priors, np.random.default_rng(1), config) for config in configs)
    assert abs(white.std() - 0.05) < 0.005 and abs(smooth.std() - 0.05) < 0.01
    assert neighbour_difference(smooth, 0) < 0.25 * neighbour_difference(white, 0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_thick_slices_remove_high_frequencies_along_their_axis(axis: int) -> None:
    image = np.random.default_rng(axis).random(SHAPE, dtype=np.float32)
    acquired = [1.0, 1.0, 1.0]
    acquired[axis] = 5.0
    sigma = [0.5, 0.5, 0.5]
    sigma[axis] = 0.4247 * 5.0
    out = simulate_acquisition(image, (1.0, 1.0, 1.0), Acquisition(tuple(acquired), tuple(sigma), (0.3, 0.3, 0.3)))
    assert out.shape == SHAPE and out.dtype == np.float32
    along = neighbour_difference(out, axis)
    across = min(neighbour_difference(out, other) for other in range(3) if other != axis)
    assert along < 0.2 * across


def test_degrade_resolution_thickens_the_drawn_axis() -> None:
    config = SynthesisConfig(thick_slice_probability=1.0, slice_thickness_range_mm=(5.0, 7.0), in_plane_voxel_range_mm=(1.0, 1.0))
    image = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    axes = set()
    for seed in range(8):
        acquisition = draw_acquisition((1.0, 1.0, 1.0), np.random.default_rng(seed), config)
        axis = int(np.argmax(acquisition.voxel_size))
        axes.add(axis)
        out = degrade_resolution(image, (1.0, 1.0, 1.0), np.random.default_rng(seed), config)
        differences = [neighbour_difference(out, a) for a in range(3)]
        assert int(np.argmin(differences)) == axis
        assert differences[axis] < 0.3 * min(d for a, d in enumerate(differences) if a != axis)  # in-plane: mild blur too
    assert len(axes) > 1  # the axis is random


def test_without_thick_slices_only_a_mild_isotropic_blur() -> None:
    config = SynthesisConfig(thick_slice_probability=0.0)
    acquisition = draw_acquisition((1.0, 2.0, 1.0), np.random.default_rng(3), config)
    assert acquisition.voxel_size == (1.0, 2.0, 1.0)
    low, high = config.partial_volume_sigma_range
    assert len(set(acquisition.blur_sigma)) == 1 and low <= acquisition.blur_sigma[0] <= high


def test_acquired_voxels_never_finer_than_the_canvas() -> None:
    config = SynthesisConfig(thick_slice_probability=1.0, in_plane_voxel_range_mm=(0.5, 0.5), slice_thickness_range_mm=(3.0, 3.0))
    acquisition = draw_acquisition((2.0, 2.0, 2.0), np.random.default_rng(0), config)
    assert sorted(acquisition.voxel_size) == [2.0, 2.0, 3.0]


@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_rician_noise_reaches_the_requested_snr_on_a_constant_image(snr: float) -> None:
    image = np.full(SHAPE, 0.8, dtype=np.float32)
    noisy = add_rician_noise(image, snr, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.min() >= 0.0
    assert 0.8 / noisy.std() == pytest.approx(snr, rel=0.05)
    assert noisy.mean() == pytest.approx(np.sqrt(0.8**2 + (0.8 / snr) ** 2), rel=0.01)


def test_rician_noise_is_relative_to_the_foreground_mean() -> None:
    image = np.zeros(SHAPE, dtype=np.float32)
    image[:16] = 0.5
    noisy = add_rician_noise(image, 10.0, np.random.default_rng(0), foreground=image > 0)
    assert noisy[:16].std() == pytest.approx(0.05, rel=0.05)


def test_bias_and_gamma() -> None:
    image = np.full(SHAPE, 0.6, dtype=np.float32)
    biased = apply_bias_field(image, 0.4, np.random.default_rng(0))
    log_ratio = np.log(biased / image)
    assert biased.dtype == np.float32 and 0.3 < np.abs(log_ratio).max() < 0.45  # peak scaled to 0.4 on a coarser grid
    assert np.array_equal(apply_bias_field(image, 0.0, np.random.default_rng(0)), image)
    ramp = np.linspace(0, 1, 32 * 32 * 32, dtype=np.float32).reshape(SHAPE)
    bent = apply_gamma(ramp, 2.0, reference=0.5)
    np.testing.assert_allclose(bent, 0.5 * (ramp / 0.5) ** 2, rtol=1e-5, atol=1e-7)


def test_a_label_without_a_prior_is_named() -> None:
    labels = toy_head()
    labels[0, 0, :2] = [7, 9]
    with pytest.raises(ValueError, match=r"Missing labels: \[7, 9\]"):
        synthesize_image(labels, (1.0, 1.0, 1.0), PRIORS, np.random.default_rng(0), SynthesisConfig())


@pytest.mark.parametrize(
    "name, value",
    [
        ("prior_probability", 1.5),
        ("smooth_variation_fraction", -0.1),
        ("thick_slice_probability", float("nan")),
        ("smooth_variation_spacing_mm", 0.0),
        ("gamma_log_std", -1.0),
        ("random_std_range", (0.2, 0.1)),
        ("random_mean_range", (0.0,)),
        ("bias_strength_range", "0.4"),
        ("slice_thickness_range_mm", (0.0, 5.0)),
        ("in_plane_voxel_range_mm", (1.0, float("inf"))),
        ("gamma_range", (-0.5, 2.0)),
        ("snr_range", (True, 5.0)),
        ("partial_volume_sigma_range", (-0.1, 0.5)),
    ],
)
def test_bad_config_values_raise_naming_the_field(name: str, value: object) -> None:
    config = dataclasses.replace(SynthesisConfig(), **{name: value})
    with pytest.raises(ConfigError, match=f"generator.synthesis.{name}"):
        synthesize_image(toy_head(), (1.0, 1.0, 1.0), PRIORS, np.random.default_rng(0), config)


@pytest.mark.parametrize(
    "labels, voxel_size, phrase",
    [
        (np.zeros(SHAPE, np.float32), (1.0, 1.0, 1.0), "integer array"),
        (np.zeros((4, 4), np.int32), (1.0, 1.0, 1.0), "3D integer array"),
        (np.full(SHAPE, -1, np.int32), (1.0, 1.0, 1.0), "label values in"),
        (np.zeros(SHAPE, np.int32), (1.0, 1.0), "voxel_size"),
        (np.zeros(SHAPE, np.int32), (1.0, 0.0, 1.0), "voxel_size"),
        (np.zeros(SHAPE, np.int32), "1mm", "voxel_size"),
    ],
)
def test_bad_arguments_raise_saying_what_was_expected(labels: np.ndarray, voxel_size: object, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        synthesize_image(labels, voxel_size, PRIORS, np.random.default_rng(0), SynthesisConfig())


@pytest.mark.parametrize("kwargs, name", [({"mean_range": (0.5, 0.2), "std_range": (0, 1)}, "mean_range"),
                                          ({"mean_range": (0, 1), "std_range": (-1, 1)}, "std_range")])
def test_bad_priors_raise_naming_the_field(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"IntensityPrior.{name}"):
        IntensityPrior(**kwargs)


def test_config_defaults_pass_and_load_from_overrides() -> None:
    check_synthesis_config(SynthesisConfig())
    assert Config().generator.synthesis == SynthesisConfig()
    config = load_config(overrides={"generator.synthesis.snr_range": [10, 20], "generator.synthesis.prior_probability": 1})
    assert config.generator.synthesis.snr_range == (10.0, 20.0)
    assert config.generator.synthesis.prior_probability == 1.0


@pytest.mark.slow
def test_speed_probe_128_cubed_at_2_mm() -> None:
    """Printed, not asserted: median seconds of `synthesize_image` on a 128^3 map of 20 labels at 2 mm."""
    radius = np.sqrt(((np.indices((128, 128, 128), dtype=np.float32) - 63.5) ** 2).sum(axis=0))
    labels = np.minimum(radius / 3.2, 19).astype(np.int32)  # 20 nested shells
    priors = {v: IntensityPrior((0.05 * v, 0.05 * v + 0.1), (0.01, 0.05)) for v in range(20)}
    seconds = []
    for seed in range(6):  # the first run also builds the shared noise bank
        start = time.perf_counter()
        synthesize_image(labels, (2.0, 2.0, 2.0), priors, np.random.default_rng(seed), SynthesisConfig())
        seconds.append(time.perf_counter() - start)
    print(f"synthesize_image 128^3, 20 labels, 2 mm: median {np.median(seconds[1:]):.3f} s over 5 runs")
