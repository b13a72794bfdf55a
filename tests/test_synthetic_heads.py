"""Synthetic full-head subjects (`brainseg_tf.datasets.synthetic_heads`): a head and its image on one grid."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from test_heads import synthetic_brain

from brainseg_tf.config import GeneratorConfig, HeadConfig
from brainseg_tf.errors import ConfigError
from brainseg_tf.datasets import heads
from brainseg_tf.datasets.synthetic_heads import (
    PART_STRIDE,
    SAME_TISSUE,
    T1_PRIORS,
    UNSPLIT_TISSUES,
    child_head,
    grow_head,
    scaled_brain,
    split_tissues,
    stripped_region,
    synthesize_head_subject,
)
from brainseg_tf.io import Image, LabelMap


def _config(**synthesis: object) -> GeneratorConfig:
    config = GeneratorConfig()
    return dataclasses.replace(config, synthesis=dataclasses.replace(config.synthesis, **synthesis))


def test_every_generation_label_has_a_t1_prior() -> None:
    assert sorted(T1_PRIORS) == [value for value, _ in heads.HEAD_LABELS]


def test_image_and_labels_share_one_grid_and_a_seed_gives_one_subject() -> None:
    brain = synthetic_brain(4.0)
    image, labels = synthesize_head_subject(brain, np.random.default_rng(3), GeneratorConfig())
    again, labels_again = synthesize_head_subject(brain, np.random.default_rng(3), GeneratorConfig())
    other, _ = synthesize_head_subject(brain, np.random.default_rng(4), GeneratorConfig())
    assert isinstance(image, Image) and isinstance(labels, LabelMap)
    assert image.shape == labels.shape and np.array_equal(image.affine, labels.affine)
    assert image.array.dtype == np.float32 and np.isfinite(image.array).all() and image.array.min() >= 0
    assert np.array_equal(image.array, again.array) and np.array_equal(labels.array, labels_again.array)
    assert not np.array_equal(image.array, other.array)
    assert set(np.unique(heads.head_to_tissue(labels.array))) == {0, 1, 2, 3}


def test_t1_like_subjects_order_the_tissues_as_a_t1_does() -> None:
    """With the T1 priors, no bias and little noise: WM > GM > CSF, fat brighter than muscle, air and bone dark."""
    config = _config(prior_probability=1.0, bias_strength_range=(0.0, 0.0), snr_range=(200.0, 200.0), thick_slice_probability=0.0)
    for seed in range(3):
        image, labels = synthesize_head_subject(synthetic_brain(4.0), np.random.default_rng(seed), config)
        mean = {value: float(image.array[labels.array == value].mean()) for value in np.unique(labels.array)}
        assert mean[heads.WHITE_MATTER] > mean[heads.GRAY_MATTER] > mean[heads.BRAIN_CSF]
        assert mean[heads.SUBCUTANEOUS_FAT] > mean[heads.GRAY_MATTER]
        assert mean[heads.INNER_TABLE] < mean[heads.GRAY_MATTER] and mean[heads.AIR] < mean[heads.BRAIN_CSF]


def _shelled_brain() -> LabelMap:
    """White matter in a 2 mm grid, wrapped in scalp fat: a stand-in head."""
    labels = np.full((20, 20, 20), heads.AIR, np.uint8)
    labels[4:16, 4:16, 4:16] = heads.SUBCUTANEOUS_FAT
    labels[8:12, 8:12, 8:12] = heads.WHITE_MATTER
    return LabelMap(labels, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_a_stripped_head_keeps_only_what_lies_within_its_margin_of_the_brain() -> None:
    head = _shelled_brain()
    kept = stripped_region(head, np.random.default_rng(0), HeadConfig(stripped_probability=1.0, stripped_margin_mm=(4.0, 4.0)))
    assert kept is not None and np.all(kept[8:12, 8:12, 8:12])
    assert kept[6:14, 6:14, 6:14].sum() == kept.sum()  # within 4 mm = 2 voxels of the brain only
    assert kept[6, 10, 10] and not kept[5, 10, 10]  # exactly 4 mm away is kept, 6 mm is not
    assert stripped_region(head, np.random.default_rng(0), HeadConfig()) is None  # probability 0


def test_stripping_is_drawn_from_its_own_stream_and_checked() -> None:
    brain = synthetic_brain(4.0)
    config = GeneratorConfig()
    stripped_config = dataclasses.replace(config, heads=HeadConfig(stripped_probability=1.0, stripped_margin_mm=(0.0, 0.0)))
    plain_image, plain = synthesize_head_subject(brain, np.random.default_rng(3), config)
    stripped_image, stripped = synthesize_head_subject(brain, np.random.default_rng(3), stripped_config)
    brain_mask = heads.head_brain_mask(stripped.array)
    assert plain.shape == stripped.shape and np.array_equal(heads.head_brain_mask(plain.array), brain_mask)
    assert np.all(stripped.array[~brain_mask] == heads.AIR)
    # The whole head is imaged, then cut as a stripping tool writes it: the brain's voxels are those of the
    # unstripped image (same draws), everything else exactly 0, not noisy air.
    assert np.array_equal(stripped_image.array[brain_mask], plain_image.array[brain_mask])
    assert np.all(stripped_image.array[~brain_mask] == 0.0) and np.any(plain_image.array[~brain_mask] != 0.0)
    with pytest.raises(ConfigError, match="stripped_probability in \\[0, 1\\]"):
        heads.build_head(brain, np.random.default_rng(0), HeadConfig(stripped_probability=1.5))


def test_cranium_anatomy_images_only_the_stripped_head_around_the_brain() -> None:
    brain = synthetic_brain(4.0)
    heads_config = HeadConfig(anatomy="cranium", stripped_probability=1.0, stripped_margin_mm=(4.0, 8.0))
    config = dataclasses.replace(GeneratorConfig(), heads=heads_config)
    image, labels = synthesize_head_subject(brain, np.random.default_rng(3), config)
    whole, _ = synthesize_head_subject(brain, np.random.default_rng(3), dataclasses.replace(config, heads=HeadConfig(stripped_probability=1.0)))
    assert image.array.size < whole.array.size  # no face or neck grown only to be cut away
    brain_mask = heads.head_brain_mask(labels.array)
    distance = ndimage.distance_transform_edt(~brain_mask) * 4.0
    kept = labels.array != heads.AIR
    assert brain_mask.sum() == (synthetic_brain(4.0).array > 0).sum()
    assert distance[kept].max() <= 8.0 + 1e-6 and distance[kept].max() >= 4.0  # cut within the drawn margin
    assert np.all(image.array[~kept] == 0.0) and np.count_nonzero(image.array[kept & ~brain_mask]) > 0
    assert set(np.unique(heads.head_to_tissue(labels.array))) == {0, 1, 2, 3}


@pytest.mark.parametrize("heads_config, words", [
    (HeadConfig(anatomy="cranium", stripped_probability=0.99), "stripped_probability 1 with anatomy 'cranium'"),
    (HeadConfig(anatomy="face", stripped_probability=1.0), "anatomy 'full' or 'cranium'"),  # type: ignore[arg-type]
])
def test_cranium_anatomy_is_refused_for_heads_left_whole(heads_config: HeadConfig, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        grow_head(synthetic_brain(4.0), np.random.default_rng(0), heads_config)


def test_a_scaled_brain_keeps_its_centroid_and_voxel_size_and_scales_its_volume() -> None:
    brain = synthetic_brain(4.0)
    for factor in (0.5, 0.65, 1.0, 1.2):
        scaled = scaled_brain(brain, factor)
        assert np.allclose(scaled.voxel_size, 4.0) and scaled.array.dtype == brain.array.dtype
        centroids = [(v.affine[:3, :3] @ np.argwhere(v.array > 0).T).mean(axis=1) + v.affine[:3, 3] for v in (scaled, brain)]
        assert np.allclose(*centroids, atol=1.0)
        ratio = np.count_nonzero(scaled.array) / np.count_nonzero(brain.array)
        assert ratio == pytest.approx(factor**3, rel=0.1), factor
        assert set(np.unique(scaled.array)) == set(np.unique(brain.array))
    for factor in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="brain scale factor > 0"):
            scaled_brain(brain, factor)


def test_labels_of_one_tissue_share_their_contrast_in_an_image() -> None:
    """The CSF around the brain is imaged as the brain's own CSF (random contrasts included): only shape tells them apart."""
    quiet = _config(prior_probability=0.0, bias_strength_range=(0.0, 0.0), snr_range=(1000.0, 1000.0), thick_slice_probability=0.0,
                    partial_volume_sigma_range=(0.0, 0.0), smooth_variation_fraction=0.0, random_std_range=(0.0, 0.0), gamma_log_std=0.0)
    for seed in range(3):
        image, labels = synthesize_head_subject(synthetic_brain(4.0), np.random.default_rng(seed), quiet)
        median = {value: float(np.median(image.array[labels.array == value])) for value in np.unique(labels.array)}
        for label, tissue in SAME_TISSUE.items():
            if label in median and tissue in median:
                assert median[label] == pytest.approx(median[tissue], rel=0.02, abs=1e-3), (label, tissue)
        assert abs(median[heads.GRAY_MATTER] - median[heads.BRAIN_CSF]) > 1e-3  # untied labels differ


def test_a_brain_scaled_per_axis_changes_each_extent_by_its_own_factor() -> None:
    brain = synthetic_brain(2.0)
    scaled = scaled_brain(brain, (0.8, 1.0, 1.2))
    extents = [np.ptp(np.argwhere(v.array > 0), axis=0) * 2.0 for v in (scaled, brain)]
    assert np.allclose(extents[0] / extents[1], (0.8, 1.0, 1.2), atol=0.06), extents
    with pytest.raises(ValueError, match="brain scale factor > 0"):
        scaled_brain(brain, (1.0, 0.0, 1.0))


def _head_tissues(seed: int = 0) -> np.ndarray:
    labels = grow_head(synthetic_brain(4.0), np.random.default_rng(seed), HeadConfig())
    return np.array([SAME_TISSUE.get(v, v) for v in range(len(heads.HEAD_LABELS))], np.uint8)[labels.array]


def test_split_tissues_cut_every_tissue_outside_the_brain_into_equal_seeded_parts() -> None:
    tissues = _head_tissues()
    config = HeadConfig(tissue_parts=3)
    split = split_tissues(tissues, (4.0, 4.0, 4.0), np.random.default_rng(1), config)
    assert split.dtype == np.uint8 and split.shape == tissues.shape
    assert np.array_equal(split % PART_STRIDE, tissues)  # every part keeps its tissue's prior
    whole = np.isin(tissues, tuple(UNSPLIT_TISSUES))
    assert np.array_equal(split[whole], tissues[whole]) and whole.any()
    parts = np.bincount(split[~whole] // PART_STRIDE, minlength=3)
    assert len(parts) == 3 and parts.min() / parts.sum() > 0.25, parts  # equal shares over the split voxels
    assert np.array_equal(split, split_tissues(tissues, (4.0, 4.0, 4.0), np.random.default_rng(1), config))
    assert not np.array_equal(split, split_tissues(tissues, (4.0, 4.0, 4.0), np.random.default_rng(2), config))
    assert split_tissues(tissues, (4.0, 4.0, 4.0), np.random.default_rng(1), HeadConfig(tissue_parts=1)) is tissues


def test_split_images_vary_outside_the_brain_and_unsplit_ones_keep_their_recipe() -> None:
    """With the split always on, the fat under the scalp shows several contrasts; at probability 0 nothing is drawn for it."""
    quiet = _config(prior_probability=1.0, bias_strength_range=(0.0, 0.0), snr_range=(1000.0, 1000.0), thick_slice_probability=0.0,
                    partial_volume_sigma_range=(0.0, 0.0), smooth_variation_fraction=0.0, gamma_log_std=0.0)
    split = dataclasses.replace(quiet, heads=HeadConfig(tissue_split_probability=1.0, tissue_parts=4))
    never = dataclasses.replace(quiet, heads=HeadConfig(tissue_split_probability=0.0, tissue_parts=4))
    brain = synthetic_brain(4.0)
    plain_image, labels = synthesize_head_subject(brain, np.random.default_rng(5), quiet)
    never_image, _ = synthesize_head_subject(brain, np.random.default_rng(5), never)
    split_image, split_labels = synthesize_head_subject(brain, np.random.default_rng(5), split)
    assert np.array_equal(plain_image.array, never_image.array) and np.array_equal(labels.array, split_labels.array)
    fat = labels.array == heads.SUBCUTANEOUS_FAT
    assert np.ptp(split_image.array[fat]) > 2 * np.ptp(plain_image.array[fat])


def test_a_child_head_has_thinner_layers_and_a_smaller_face_as_the_suite_s_children() -> None:
    adult = HeadConfig()
    assert child_head(adult, 1.0) is adult and child_head(adult, 1.2) is adult  # exactly at 1: an adult's head
    small = child_head(adult, 0.65)
    assert small.thickness_scale == pytest.approx(0.545) and small.face_scale == pytest.approx((0.585, 0.715))
    assert child_head(adult, 0.8).thickness_scale == pytest.approx(0.74)
    assert child_head(adult, 0.1).thickness_scale == pytest.approx(0.2)  # never thinner than a fifth
    assert child_head(HeadConfig(thickness_scale=0.5), 0.65).thickness_scale == pytest.approx(0.5 * 0.545)
