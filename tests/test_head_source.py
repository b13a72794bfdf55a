"""Batches from fresh synthetic heads (`brainseg_tf.data.head_source`): seeded, one head per batch, both targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_heads import synthetic_brain

from brainseg_tf.config import Config
from brainseg_tf.data.encoding import TargetEncoding
from brainseg_tf.data.head_source import HEAD_AXIS_STREAM, HeadSource, MixedSource, batch_rng, make_head_dataset
from brainseg_tf.data.pipeline import SampleSource
from brainseg_tf.datasets.cache import Subject
from brainseg_tf.errors import ConfigError, DatasetError
from brainseg_tf.labels import TISSUE
from brainseg_tf.preprocessing import Preprocessing

VOXEL = 4.0
CONFIG = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8}).generator
RECIPE = Preprocessing(VOXEL, 0.5, 99.5)


@pytest.fixture(scope="module")
def brains() -> list[Subject]:
    """Two brains as the embedded cache holds them: TISSUE classes on a RAS+ grid (image unused by heads)."""
    subjects = []
    for number, scale in enumerate((1.0, 0.8)):
        brain = synthetic_brain(VOXEL, scale)
        classes = np.asarray(brain.array, np.uint8)
        subjects.append(Subject(f"b{number}", np.zeros(classes.shape, np.float32), classes, brain.affine, "train"))
    return subjects


def test_a_batch_is_seeded_by_its_position_and_cut_from_one_head(brains: list[Subject]) -> None:
    source = HeadSource(brains, CONFIG, RECIPE, "tissue")
    images, labels = source.batch(0, np.arange(4))
    again, labels_again = source.batch(0, np.arange(4))
    next_images, _ = source.batch(0, np.arange(4, 8))
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32 and labels.shape == (4, 32, 32)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, next_images)  # another batch: another head and other crops
    assert np.isfinite(images).all() and -0.5 < images.min() and images.max() < 1.5  # [0, 1] plus the augmentation's noise
    assert set(np.unique(labels)) <= {0, 1, 2, 3}


def test_heads_differ_by_batch_and_epoch_and_are_prepared_by_the_input_contract(brains: list[Subject]) -> None:
    source = HeadSource(brains, CONFIG, RECIPE, "brain")
    first, second, later = source.head(0, 0), source.head(0, 1), source.head(3, 0)
    assert first.image.shape != second.image.shape or not np.array_equal(first.image, second.image)
    assert not np.array_equal(first.classes, later.classes) or not np.array_equal(first.image, later.image)
    assert set(np.unique(first.classes)) == {0, 1}
    assert np.allclose(np.abs(np.diag(first.affine)[:3]), VOXEL)  # built at the contract's voxel size
    assert float(first.image.min()) >= 0.0 and float(first.image.max()) <= 1.0  # normalised as inference does
    brain_fraction = first.classes.mean()
    assert 0.02 < brain_fraction < 0.6  # a head around the brain: most of the canvas is not brain


def test_both_encodings_through_tf_data(brains: list[Subject]) -> None:
    for target, encoding, channels in (("tissue", TargetEncoding.softmax(), 4), ("brain", TargetEncoding.sigmoid(1), 1)):
        dataset = make_head_dataset(brains, CONFIG, RECIPE, encoding, target)
        batches = list(dataset.as_numpy_iterator())
        assert len(batches) == 2
        inputs, targets = batches[0]
        assert inputs.shape == (4, 32, 32, 3) and targets.shape == (4, 32, 32, channels)


def test_refusals(brains: list[Subject]) -> None:
    with pytest.raises(DatasetError, match="at least one brain"):
        HeadSource([], CONFIG, RECIPE)
    with pytest.raises(ValueError, match="target"):
        HeadSource(brains, CONFIG, RECIPE, "skull")  # type: ignore[arg-type]


def test_all_slice_axes_draws_each_batch_along_a_seeded_axis(brains: list[Subject]) -> None:
    config = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 2, "generator.samples_per_epoch": 24,
                               "generator.random_slice_axis": True}).generator
    source = HeadSource(brains, config, RECIPE, "brain", augment=False)
    axes = set()
    for batch in range(12):
        positions = np.arange(2 * batch, 2 * batch + 2)
        images, _ = source.batch(0, positions)
        assert np.array_equal(images, source.batch(0, positions)[0])  # seeded
        axis = int(batch_rng(config.seed, 0, batch, HEAD_AXIS_STREAM).integers(3))
        axes.add(axis)
        fixed = HeadSource(brains, Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 2,
                                                     "generator.samples_per_epoch": 24, "generator.slice_axis": axis}).generator,
                           RECIPE, "brain", augment=False)
        assert np.array_equal(images, fixed.batch(0, positions)[0])  # the same samples as a source fixed on that axis
    assert axes == {0, 1, 2}


def test_batches_per_head_share_one_head_drawn_once(brains: list[Subject], monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 2, "generator.samples_per_epoch": 12,
                               "generator.batches_per_head": 3}).generator
    source = HeadSource(brains, config, RECIPE, "tissue")
    drawn: list[tuple[int, int]] = []
    draw = source._draw_head
    monkeypatch.setattr(source, "_draw_head", lambda epoch, index: drawn.append((epoch, index)) or draw(epoch, index))
    first, second, third, fourth = (source.head(0, b) for b in range(4))
    assert first is second is third and fourth is not first  # batches 0-2 share head 0, batch 3 starts head 1
    assert drawn == [(0, 0), (0, 1)]
    single = HeadSource(brains, CONFIG, RECIPE, "tissue")  # batches_per_head 1: head k of a shared source is batch k's own head
    assert np.array_equal(fourth.image, single.head(0, 1).image)
    images, _ = source.batch(0, np.arange(2))
    next_images, _ = source.batch(0, np.arange(2, 4))
    assert not np.array_equal(images, next_images)  # one head, other crops and augmentation


def test_a_failed_head_is_not_kept(brains: list[Subject], monkeypatch: pytest.MonkeyPatch) -> None:
    source = HeadSource(brains, CONFIG, RECIPE, "tissue")
    monkeypatch.setattr(source, "_draw_head", lambda epoch, index: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        source.head(0, 0)
    monkeypatch.undo()
    assert source.head(0, 0).image.size > 0  # drawn afresh, not the stored failure


def test_a_brain_scale_range_draws_smaller_and_larger_brains(brains: list[Subject]) -> None:
    config = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8,
                               "generator.heads.brain_scale": [0.6, 1.2]}).generator
    plain, scaled = HeadSource(brains[:1], CONFIG, RECIPE, "brain"), HeadSource(brains[:1], config, RECIPE, "brain")
    ratios = [scaled.head(0, b).classes.sum() / plain.head(0, b).classes.sum() for b in range(6)]
    assert min(ratios) < 0.8 and max(ratios) > 1.1 and all(0.6**3 * 0.8 < r < 1.2**3 * 1.2 for r in ratios), ratios


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_brain_scale_probability_is_the_share_of_heads_drawn_at_another_size(brains: list[Subject], probability: float) -> None:
    settings = {"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8,
                "generator.heads.brain_scale": [0.6, 0.6], "generator.heads.brain_scale_probability": probability}
    plain, scaled = HeadSource(brains[:1], CONFIG, RECIPE, "brain"), HeadSource(brains[:1], Config().replace(settings).generator, RECIPE, "brain")
    small = [scaled.head(0, b).classes.sum() < 0.5 * plain.head(0, b).classes.sum() for b in range(12)]
    if probability == 0.0:
        assert not any(small)
    elif probability == 1.0:
        assert all(small)
    else:
        assert 2 <= sum(small) <= 10, small


def test_a_brain_aspect_jitter_changes_the_brains_proportions_and_none_keeps_the_recipe(brains: list[Subject]) -> None:
    jittered = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8,
                                 "generator.heads.brain_aspect_jitter": 0.3}).generator
    plain, again, jitter = (HeadSource(brains[:1], c, RECIPE, "brain") for c in (CONFIG, CONFIG, jittered))
    assert np.array_equal(plain.head(0, 0).classes, again.head(0, 0).classes)
    aspects = []
    for b in range(4):
        extents = [np.ptp(np.argwhere(source.head(0, b).classes > 0), axis=0).astype(float) for source in (jitter, plain)]
        ratio = extents[0] / extents[1]
        aspects.append(ratio.max() / ratio.min())
    assert max(aspects) > 1.15 and all(a < (1.3 / 0.7) * 1.2 for a in aspects), aspects


def test_a_layer_scale_thins_every_head_whatever_its_brain_and_the_default_draws_nothing(brains: list[Subject]) -> None:
    settings = {"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8}
    plain, again = (HeadSource(brains[:1], Config().replace(settings).generator, RECIPE, "tissue") for _ in range(2))
    unit = HeadSource(brains[:1], Config().replace({**settings, "generator.heads.layer_scale": [1.0, 1.0]}).generator, RECIPE, "tissue")
    thin = HeadSource(brains[:1], Config().replace({**settings, "generator.heads.layer_scale": [0.4, 0.4]}).generator, RECIPE, "tissue")
    assert np.array_equal(plain.head(0, 0).image, again.head(0, 0).image) and np.array_equal(plain.head(0, 0).image, unit.head(0, 0).image)
    heads = [(source.head(0, 0).image > 0.02).sum() for source in (plain, thin)]
    brains_drawn = [(source.head(0, 0).classes > 0).sum() for source in (plain, thin)]
    assert heads[1] < heads[0] and brains_drawn[0] == brains_drawn[1], (heads, brains_drawn)  # less head, the same brain


def test_child_layers_give_small_brains_a_thinner_head(brains: list[Subject]) -> None:
    settings = {"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8,
                "generator.heads.brain_scale": [0.65, 0.65]}
    adult_layers = HeadSource(brains[:1], Config().replace(settings).generator, RECIPE, "tissue")
    child_layers = HeadSource(brains[:1], Config().replace({**settings, "generator.heads.child_layers": True}).generator, RECIPE, "tissue")
    heads = [(source.head(0, 0).image > 0.02).sum() for source in (adult_layers, child_layers)]
    assert heads[1] < heads[0], heads  # the same brain, less head around it


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_batches_per_head_must_be_a_positive_int(brains: list[Subject], value: object) -> None:
    config = dataclasses.replace(CONFIG, batches_per_head=value)
    with pytest.raises(ConfigError, match="batches_per_head as an int >= 1"):
        HeadSource(brains, config, RECIPE, "tissue")


def test_a_mixed_source_draws_each_batch_from_one_source_by_its_seeded_share(brains: list[Subject]) -> None:
    config = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 2, "generator.samples_per_epoch": 80}).generator
    heads = HeadSource(brains, config, RECIPE, "tissue")
    cached = SampleSource(brains, TISSUE, config)
    mixed = MixedSource(heads, cached, TISSUE, 0.3)
    chosen = [mixed.from_heads(epoch, batch) for epoch in range(3) for batch in range(40)]
    assert 0.15 < np.mean(chosen) < 0.45 and chosen == [mixed.from_heads(e, b) for e in range(3) for b in range(40)]
    first_head = next(b for b in range(40) if mixed.from_heads(0, b))
    first_cached = next(b for b in range(40) if not mixed.from_heads(0, b))
    for batch, source in ((first_head, heads), (first_cached, cached)):
        positions = np.arange(2 * batch, 2 * batch + 2)
        assert all(np.array_equal(a, b) for a, b in zip(mixed.batch(0, positions), source.batch(0, positions)))
    assert all(MixedSource(heads, cached, TISSUE, 1.0).from_heads(0, b) for b in range(40))
    assert not any(MixedSource(heads, cached, TISSUE, 0.0).from_heads(0, b) for b in range(40))


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True, float("nan")])
def test_a_mixed_source_refuses_a_share_outside_0_1(brains: list[Subject], fraction: object) -> None:
    with pytest.raises(ConfigError, match="heads_fraction in \\[0, 1\\]"):
        MixedSource(HeadSource(brains, CONFIG, RECIPE, "tissue"), SampleSource(brains, TISSUE, CONFIG), TISSUE, fraction)  # type: ignore[arg-type]


def test_a_mixed_source_refuses_targets_the_cache_does_not_hold(brains: list[Subject]) -> None:
    with pytest.raises(ConfigError, match="hold the heads' targets"):
        MixedSource(HeadSource(brains, CONFIG, RECIPE, "brain"), SampleSource(brains, TISSUE, CONFIG), TISSUE, 0.5)
