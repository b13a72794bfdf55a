"""The embedded MNI152 dataset: label rule, ids and splits, and synthesised subjects at 3 mm."""

from __future__ import annotations

import dataclasses
import itertools

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brainseg_tf.config import EmbeddedDatasetConfig
from brainseg_tf.datasets.embedded import (
    NATIVE_ORIENTATIONS,
    NATIVE_VOXEL_SIZES,
    Template,
    load_template,
    resampled_indices,
    subject_ids,
    synthesize_subject,
    tissue_labels,
)
from brainseg_tf.errors import ConfigError
from brainseg_tf.io import Image, Volume

QUICK = EmbeddedDatasetConfig(template_voxel_size=3.0, n_train=3, n_val=1, n_test=1)
STILL = dataclasses.replace(  # no deformation, no scanner change, no noise; every subject on a native grid
    QUICK,
    max_rotation_deg=0.0,
    max_scale=0.0,
    max_shear=0.0,
    max_translation_mm=0.0,
    elastic_sigma_mm=0.0,
    bias_field_strength=0.0,
    gamma_log_std=0.0,
    noise_std=0.0,
    contrast_jitter=0.0,
    resampled_fraction=1.0,
)
N_SUBJECTS = QUICK.n_train + QUICK.n_val + QUICK.n_test
Subjects = list[tuple[Volume, Volume]]  # (image, label map) per index


@pytest.fixture(scope="module")
def template() -> Template:
    pytest.importorskip("nilearn")
    return load_template(QUICK.template_voxel_size)


@pytest.fixture(scope="module")
def subjects(template: Template) -> Subjects:
    return [synthesize_subject(template, index, QUICK) for index in range(N_SUBJECTS)]


def tissue_volumes(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """mm^3 of stored values 0..3."""
    voxel_volume = abs(np.linalg.det(affine[:3, :3]))
    return np.bincount(labels.ravel(), minlength=4)[:4] * voxel_volume


# --- the label rule -------------------------------------------------------------------------------


def test_tissue_labels_follow_the_rule_with_ties_to_the_later_tissue():
    gray = np.array([0.6, 0.2, 0.1, 0.5, 0.4, 0.25, 0.0, 0.9], dtype=np.float32)
    white = np.array([0.2, 0.7, 0.1, 0.5, 0.0, 0.25, 0.0, 0.1], dtype=np.float32)
    mask = np.array([1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    # CSF = 1 - GM - WM:  0.2  0.1  0.8  0.0  0.6  0.5  1.0  (outside)
    expected = np.array([2, 3, 1, 3, 1, 1, 1, 0], dtype=np.uint8)
    gray, white, mask, expected = (a.reshape(2, 2, 2) for a in (gray, white, mask, expected))
    labels = tissue_labels(gray, white, mask)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    ("gray", "white", "expected"),
    [(0.5, 0.0, 2), (0.4, 0.4, 3), (0.5, 0.5, 3), (0.25, 0.25, 1), (0.0, 0.5, 3)],
    ids=["gm-csf-tie", "gm-wm-tie", "gm-wm-tie-no-csf", "csf-wins", "wm-csf-tie"],
)
def test_tissue_labels_ties(gray: float, white: float, expected: int):
    labels = tissue_labels(np.full((1, 1, 1), gray), np.full((1, 1, 1), white), np.ones((1, 1, 1), bool))
    assert labels.item() == expected


def test_tissue_labels_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        tissue_labels(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), np.ones((2, 2, 2), bool))


# --- ids, splits and the recipe's checks ----------------------------------------------------------


def test_subject_ids_and_splits():
    ids = subject_ids(QUICK)
    assert [i for i, _ in ids] == ["mni-000", "mni-001", "mni-002", "mni-003", "mni-004"]
    assert [s for _, s in ids] == ["train", "train", "train", "val", "test"]
    assert len(subject_ids(dataclasses.replace(QUICK, n_train=1000, n_val=0, n_test=1))[-1][0]) == len("mni-1000")


def test_resampled_share_is_exact_and_seeded():
    assert len(resampled_indices(QUICK)) == 2  # 0.3 x 5 = 1.5, rounded half up
    assert resampled_indices(QUICK) == resampled_indices(QUICK)
    assert resampled_indices(dataclasses.replace(QUICK, resampled_fraction=0.0)) == frozenset()
    assert resampled_indices(STILL) == frozenset(range(N_SUBJECTS))
    large = dataclasses.replace(QUICK, n_train=100)
    assert resampled_indices(large) != resampled_indices(dataclasses.replace(large, seed=large.seed + 1))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n_train", -1),
        ("template_voxel_size", 0.5),
        ("max_scale", 1.0),
        ("contrast_jitter", -0.1),
        ("resampled_fraction", 1.5),
        ("elastic_spacing_mm", 0.0),
        ("noise_std", float("nan")),
    ],
)
def test_bad_recipe_values_are_named(key: str, value: object):
    with pytest.raises(ConfigError, match=f"data.embedded.{key}"):
        subject_ids(dataclasses.replace(QUICK, **{key: value}))


def test_empty_dataset_is_refused():
    with pytest.raises(ConfigError, match="at least one"):
        subject_ids(dataclasses.replace(QUICK, n_train=0, n_val=0, n_test=0))


def test_load_template_refuses_finer_than_one_mm():
    with pytest.raises(ValueError, match="voxel_size"):
        load_template(0.5)


# --- the template ---------------------------------------------------------------------------------


def test_template_loads_on_one_coarse_ras_grid(template: Template):
    shape = template.image.shape
    assert shape == (66, 78, 63)  # the 197 x 233 x 189 MNI grid at 3 mm
    assert template.gray_matter.shape == template.white_matter.shape == template.brain_mask.shape == shape
    assert template.image.array.dtype == template.gray_matter.dtype == np.float32
    assert template.brain_mask.dtype == bool
    assert nib.aff2axcodes(template.image.affine) == ("R", "A", "S")
    np.testing.assert_allclose(template.image.voxel_size, 3.0)
    assert 0.15 < template.brain_mask.mean() < 0.3
    brain_litres = template.brain_mask.sum() * 27 / 1e6
    assert 1.5 < brain_litres < 2.2
    labels = tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)
    csf, gray, white = np.bincount(labels.ravel(), minlength=4)[1:]
    assert gray > white > csf > 0


# --- synthesised subjects -------------------------------------------------------------------------


def test_subjects_are_deterministic(template: Template, subjects: Subjects):
    for index in (0, sorted(resampled_indices(QUICK))[0]):
        image, labels = synthesize_subject(template, index, QUICK)
        np.testing.assert_array_equal(image.array, subjects[index][0].array)
        np.testing.assert_array_equal(labels.array, subjects[index][1].array)
        np.testing.assert_array_equal(image.affine, subjects[index][0].affine)
    other = synthesize_subject(template, 0, dataclasses.replace(QUICK, seed=QUICK.seed + 1))[0]
    assert not np.array_equal(other.array, subjects[0][0].array)


def test_subjects_differ_from_each_other(subjects: Subjects):
    plain = [image.array for index, (image, _) in enumerate(subjects) if index not in resampled_indices(QUICK)]
    assert len(plain) >= 2
    assert not np.array_equal(plain[0], plain[1])
    assert np.abs(plain[0] - plain[1]).mean() > 0.02


def test_image_and_labels_share_one_grid(subjects: Subjects):
    for image, labels in subjects:
        assert image.shape == labels.shape
        np.testing.assert_array_equal(image.affine, labels.affine)
        assert image.array.dtype == np.float32 and labels.array.dtype == np.int32
        assert np.isfinite(image.array).all() and image.array.min() >= 0


def test_subjects_arrive_as_a_stripping_tool_writes_them(subjects: Subjects):
    for image, labels in subjects:  # QUICK has noise: inside the brain every voxel varies, outside it is exactly 0
        brain = labels.array > 0
        assert np.all(image.array[~brain] == 0.0) and np.count_nonzero(image.array[brain] == 0.0) < 0.001 * brain.sum()


def test_labels_hold_all_four_tissue_values(subjects: Subjects):
    for _, labels in subjects:
        assert set(np.unique(labels.array)) == {0, 1, 2, 3}


def test_labels_sit_on_the_image_anatomy(subjects: Subjects):
    for image, labels in subjects:
        medians = [np.median(image.array[labels.array == value]) for value in range(4)]
        assert medians[0] < medians[1] < medians[2] < medians[3]  # T1: background < CSF < GM < WM


def test_deformation_keeps_tissue_volumes(template: Template, subjects: Subjects):
    reference = tissue_volumes(tissue_labels(template.gray_matter, template.white_matter, template.brain_mask), template.image.affine)
    for _, labels in subjects:
        volumes = tissue_volumes(labels.array, labels.affine)
        np.testing.assert_allclose(volumes[1:], reference[1:], rtol=0.35)


def test_resampled_subjects_carry_their_native_grid(subjects: Subjects):
    allowed = {tuple(np.round(np.asarray(sizes) * QUICK.template_voxel_size, 6)) for sizes in NATIVE_VOXEL_SIZES}
    for index, (image, _) in enumerate(subjects):
        axcodes = "".join(nib.aff2axcodes(image.affine))
        sizes = tuple(np.round(image.voxel_size, 6))
        if index in resampled_indices(QUICK):
            assert axcodes in NATIVE_ORIENTATIONS
            assert sizes in allowed
        else:
            assert axcodes == "RAS"
            assert sizes == (3.0, 3.0, 3.0)


@pytest.fixture(scope="module")
def lopsided_template() -> Template:
    """A small random template with no symmetry (nilearn's MNI152 2009a is left/right symmetric)."""
    rng = np.random.default_rng(7)
    shape = (20, 24, 22)
    smooth = []
    for _ in range(3):
        field = ndimage.gaussian_filter(rng.random(shape), 2.0)
        smooth.append(((field - field.min()) / (field.max() - field.min())).astype(np.float32))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = (-30.0, -40.0, -25.0)
    image = Image(smooth[0] + np.linspace(0, 1, shape[0], dtype=np.float32)[:, None, None], affine)
    gray, white = 0.6 * smooth[1], 0.6 * smooth[2]
    mask = np.zeros(shape, dtype=bool)
    mask[2:17, 2:20, 4:21] = True
    return Template(image, gray, white, mask)


def test_native_grids_keep_world_coordinates(lopsided_template: Template):
    """Without deformation or scanner changes, every native voxel shows the template at its world point."""
    template = lopsided_template
    reference_labels = tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)
    assert set(np.unique(reference_labels)) == {0, 1, 2, 3}
    seen = set()
    for index in range(N_SUBJECTS):
        image, labels = synthesize_subject(template, index, STILL)
        seen.add("".join(nib.aff2axcodes(image.affine)))
        to_template = np.linalg.solve(template.image.affine, image.affine)  # native voxel -> template voxel
        grid = np.indices(image.shape, dtype=np.float64).reshape(3, -1)
        points = to_template[:3, :3] @ grid + to_template[:3, 3:]
        expected = ndimage.map_coordinates(template.image.array, points, order=1, mode="nearest").reshape(image.shape)
        np.testing.assert_allclose(image.array, np.where(labels.array > 0, expected, 0.0), atol=1e-3)  # zeros outside the brain
        matches = np.zeros(image.shape, dtype=bool)
        for signs in itertools.product((-1, 1), repeat=3):  # halfway between voxels, either neighbour is nearest
            nudged = points + 1e-3 * np.reshape(signs, (3, 1))
            nearest = ndimage.map_coordinates(reference_labels, nudged, order=0, mode="nearest").reshape(image.shape)
            matches |= labels.array == nearest
        assert matches.all()
    assert len(seen) >= 2  # several orientations were exercised


def test_still_recipe_on_the_template_grid_reproduces_the_template(template: Template):
    config = dataclasses.replace(STILL, resampled_fraction=0.0)
    image, labels = synthesize_subject(template, 0, config)
    np.testing.assert_array_equal(image.affine, template.image.affine)
    np.testing.assert_allclose(image.array, np.where(labels.array > 0, template.image.array, 0.0), atol=1e-3)
    reference = tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)
    assert np.mean(labels.array == reference) > 0.999


@pytest.mark.parametrize("index", [-1, N_SUBJECTS, 1.0, True])
def test_bad_index_is_refused(template: Template, index: object):
    with pytest.raises(ValueError, match="index"):
        synthesize_subject(template, index, QUICK)  # type: ignore[arg-type]


def test_template_at_another_voxel_size_is_refused(template: Template):
    with pytest.raises(ValueError, match="template_voxel_size"):
        synthesize_subject(template, 0, dataclasses.replace(QUICK, template_voxel_size=2.0))
