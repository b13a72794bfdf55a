"""Heads grown around structures brains (`synthetic_heads.synthesize_head_subject(..., structures=)`, the
``structures`` target of `HeadSource`): the tissue head, with a contrast per structure inside the brain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_heads import CENTRE, synthetic_brain

from brainseg_tf.config import Config, GeneratorConfig
from brainseg_tf.data.encoding import TargetEncoding
from brainseg_tf.data.head_source import HeadSource, make_head_dataset
from brainseg_tf.datasets import heads
from brainseg_tf.datasets.cache import Subject
from brainseg_tf.datasets.synthetic_heads import (
    STRUCTURE_GENERATION_BASE,
    on_head_grid,
    structure_priors,
    synthesize_head_subject,
    tissue_of_structure_classes,
)
from brainseg_tf.errors import LabelError
from brainseg_tf.io import LabelMap
from brainseg_tf.labels import STRUCTURES
from brainseg_tf.preprocessing import Preprocessing

VOXEL = 4.0


def structures_brain(voxel: float, scale: float = 1.0) -> LabelMap:
    """`test_heads.synthetic_brain` split into ``STRUCTURES`` classes: cerebral white matter, cortex and lateral
    ventricles by side of world x, a putamen in each hemisphere's white matter, the stem as brain stem."""
    brain = synthetic_brain(voxel, scale)
    tissue = np.asarray(brain.array)
    index = np.indices(tissue.shape).reshape(3, -1)
    world = (brain.affine[:3, :3] @ index + brain.affine[:3, 3:4]).reshape(3, *tissue.shape)
    left = world[0] < CENTRE[0]
    classes = np.zeros(tissue.shape, np.int32)
    for side, where in (("Left", left), ("Right", ~left)):
        classes[(tissue == 3) & where] = STRUCTURES.class_index(f"{side}-Cerebral-White-Matter")
        classes[(tissue == 2) & where] = STRUCTURES.class_index(f"{side}-Cerebral-Cortex")
        classes[(tissue == 1) & where] = STRUCTURES.class_index(f"{side}-Lateral-Ventricle")
        offset = -25.0 if side == "Left" else 25.0
        putamen = (np.abs(world[0] - CENTRE[0] - offset) <= 8) & (np.abs(world[1] - CENTRE[1]) <= 12) & (np.abs(world[2] - CENTRE[2]) <= 8)
        classes[putamen & (tissue == 3)] = STRUCTURES.class_index(f"{side}-Putamen")
    classes[(tissue == 3) & (world[2] < CENTRE[2] - 0.9 * 60.0)] = STRUCTURES.class_index("Brain-Stem")
    return LabelMap(classes, brain.affine)


def _quiet_t1(**heads_settings: object) -> GeneratorConfig:
    config = GeneratorConfig()
    synthesis = dataclasses.replace(config.synthesis, prior_probability=1.0, bias_strength_range=(0.0, 0.0),
                                    snr_range=(500.0, 500.0), thick_slice_probability=0.0, smooth_variation_fraction=0.0)
    return dataclasses.replace(config, synthesis=synthesis, heads=dataclasses.replace(config.heads, **heads_settings))


def test_the_structures_brain_fixture_holds_the_expected_classes() -> None:
    structures = structures_brain(VOXEL)
    names = {STRUCTURES.names[c] for c in np.unique(structures.array)}
    assert {"Left-Putamen", "Right-Putamen", "Brain-Stem", "Left-Lateral-Ventricle", "Right-Cerebral-Cortex"} <= names


def test_tissue_of_structure_classes_follows_the_kinds_and_refuses_other_classes() -> None:
    classes = np.array([0, STRUCTURES.class_index("Left-Putamen"), STRUCTURES.class_index("Right-Hippocampus"),
                        STRUCTURES.class_index("Brain-Stem"), STRUCTURES.class_index("4th-Ventricle"), STRUCTURES.class_index("CSF")])
    assert tissue_of_structure_classes(classes).tolist() == [0, 2, 2, 3, 1, 1]
    assert tissue_of_structure_classes(classes).dtype == np.uint8
    with pytest.raises(LabelError, match=r"'structures' classes in \[0, 32\]. Received: dtype=int64, range \[0, 33\]"):
        tissue_of_structure_classes(np.array([0, STRUCTURES.num_classes]))
    with pytest.raises(LabelError, match="range \\[-1, 0\\]"):
        tissue_of_structure_classes(np.array([-1, 0]))


def test_every_structure_has_a_prior_of_its_kind_above_the_head_labels() -> None:
    priors = structure_priors()
    assert sorted(priors) == [STRUCTURE_GENERATION_BASE + c for c in range(1, STRUCTURES.num_classes)]
    assert STRUCTURE_GENERATION_BASE > max(v for v, _ in heads.HEAD_LABELS) + 7 * 32  # above every head label part
    wm, putamen = priors[STRUCTURE_GENERATION_BASE + STRUCTURES.class_index("Left-Cerebral-White-Matter")], priors[STRUCTURE_GENERATION_BASE + STRUCTURES.class_index("Left-Putamen")]
    cortex = priors[STRUCTURE_GENERATION_BASE + STRUCTURES.class_index("Left-Cerebral-Cortex")]
    assert wm.mean_range[0] > putamen.mean_range[0] > cortex.mean_range[0]


def test_a_structures_head_is_the_tissue_head_and_its_structures_lie_on_it() -> None:
    structures = structures_brain(VOXEL)
    tissue = structures.with_array(tissue_of_structure_classes(structures.array))
    config = GeneratorConfig()
    image, labels = synthesize_head_subject(tissue, np.random.default_rng(5), config, structures=structures)
    plain_image, plain_labels = synthesize_head_subject(tissue, np.random.default_rng(5), config)
    again, _ = synthesize_head_subject(tissue, np.random.default_rng(5), config, structures=structures)
    assert np.array_equal(labels.array, plain_labels.array) and np.array_equal(labels.affine, plain_labels.affine)  # the same head
    assert np.array_equal(image.array, again.array) and not np.array_equal(image.array, plain_image.array)
    placed = on_head_grid(structures, labels)
    assert np.array_equal(tissue_of_structure_classes(placed), heads.head_to_tissue(labels.array))  # voxel for voxel
    assert np.array_equal(np.bincount(placed.ravel(), minlength=33)[1:], np.bincount(structures.array.ravel(), minlength=33)[1:])  # all of the brain
    assert sorted(np.unique(placed)) == sorted(np.unique(structures.array))


def test_each_structure_draws_its_own_contrast_where_the_tissue_head_ties_its_tissue() -> None:
    """Left and right white matter share one tissue contrast in a tissue head; as structures they are drawn apart."""
    structures = structures_brain(VOXEL)
    tissue = structures.with_array(tissue_of_structure_classes(structures.array))
    left, right = (STRUCTURES.class_index(f"{side}-Cerebral-White-Matter") for side in ("Left", "Right"))
    gaps, tied_gaps = [], []
    for seed in range(4):
        image, labels = synthesize_head_subject(tissue, np.random.default_rng(seed), _quiet_t1(), structures=structures)
        placed = on_head_grid(structures, labels)
        core = np.asarray(labels.array) == heads.WHITE_MATTER
        gaps.append(abs(np.median(image.array[core & (placed == left)]) - np.median(image.array[core & (placed == right)])))
        plain, _ = synthesize_head_subject(tissue, np.random.default_rng(seed), _quiet_t1())
        tied_gaps.append(abs(np.median(plain.array[core & (placed == left)]) - np.median(plain.array[core & (placed == right)])))
    assert max(tied_gaps) < 0.01 * np.median(image.array[core])
    assert np.median(gaps) > 5 * max(tied_gaps)


def test_on_head_grid_places_by_whole_voxel_shifts_and_refuses_other_grids() -> None:
    labels = LabelMap(np.arange(1, 28, dtype=np.int32).reshape(3, 3, 3), np.diag([2.0, 2.0, 2.0, 1.0]))
    grown = np.diag([2.0, 2.0, 2.0, 1.0])
    grown[:3, 3] = [-2.0, 0.0, 2.0]  # one voxel before on i, same on j, one voxel after on k
    head = LabelMap(np.zeros((5, 3, 2), np.uint8), grown)
    placed = on_head_grid(labels, head)
    assert placed.dtype == np.int32 and placed.shape == (5, 3, 2)
    assert np.array_equal(placed[1:4, :, :], labels.array[:, :, 1:3]) and not placed[0].any() and not placed[4].any()
    half = grown.copy()
    half[0, 3] = -1.0
    with pytest.raises(ValueError, match="shifted by whole voxels. Received: offset \\[-0.5, 0.0, 1.0\\]"):
        on_head_grid(labels, LabelMap(head.array, half))
    far = grown.copy()
    far[:3, 3] = [100.0, 0.0, 0.0]
    assert not on_head_grid(labels, LabelMap(head.array, far)).any()


def test_structures_must_match_the_brain_they_detail() -> None:
    structures = structures_brain(VOXEL)
    tissue = structures.with_array(tissue_of_structure_classes(structures.array))
    with pytest.raises(ValueError, match="tissues of structures"):
        synthesize_head_subject(tissue.with_array(np.where(tissue.array == 2, 3, tissue.array)), np.random.default_rng(0), GeneratorConfig(), structures=structures)
    shifted = structures.affine.copy()
    shifted[0, 3] += VOXEL
    with pytest.raises(ValueError, match="on the brain's grid"):
        synthesize_head_subject(tissue, np.random.default_rng(0), GeneratorConfig(), structures=LabelMap(structures.array, shifted))


CONFIG = Config().replace({"generator.slice_shape": [32, 32], "generator.batch_size": 4, "generator.samples_per_epoch": 8}).generator


@pytest.fixture(scope="module")
def structure_brains() -> list[Subject]:
    """Two brains as the embedded structures cache holds them: ``STRUCTURES`` classes on a RAS+ grid."""
    subjects = []
    for number, scale in enumerate((1.0, 0.8)):
        brain = structures_brain(VOXEL, scale)
        classes = np.asarray(brain.array, np.uint8)
        subjects.append(Subject(f"s{number}", np.zeros(classes.shape, np.float32), classes, brain.affine, "train"))
    return subjects


def test_a_head_source_grows_heads_around_structures_and_targets_them(structure_brains: list[Subject]) -> None:
    recipe = Preprocessing(VOXEL, 0.5, 99.5)
    source = HeadSource(structure_brains, CONFIG, recipe, "structures")
    assert source.label_set is STRUCTURES
    head = source.head(0, 0)
    brain_classes = {int(c) for b in structure_brains for c in np.unique(b.classes)}
    assert set(np.unique(head.classes)) <= brain_classes and len(np.unique(head.classes)) >= 8
    assert 0.02 < float((head.classes > 0).mean()) < 0.6  # a head around the brain
    images, labels = source.batch(0, np.arange(4))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 32, 32) and labels.max() < STRUCTURES.num_classes
    dataset = make_head_dataset(structure_brains, CONFIG, recipe, TargetEncoding.softmax(), "structures")
    inputs, targets = next(dataset.as_numpy_iterator())
    assert inputs.shape == (4, 32, 32, 3) and targets.shape == (4, 32, 32, STRUCTURES.num_classes)
