"""Synthetic full-head subjects (`brainseg_tf.datasets.synthetic_heads`): a head and its image on one grid."""

from __future__ import annotations

import dataclasses

import numpy as np
from test_heads import synthetic_brain

from brainseg_tf.config import GeneratorConfig
from brainseg_tf.datasets import heads
from brainseg_tf.datasets.synthetic_heads import T1_PRIORS, synthesize_head_subject
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
