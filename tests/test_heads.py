"""Procedural heads around brain label maps: labels, geometry, layer thicknesses, anatomy placement, validation."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from scipy import ndimage

from brainseg_tf.config import GeneratorConfig, HeadConfig, load_config
from brainseg_tf.datasets.heads import (
    AIR,
    BRAIN_LABELS,
    DIPLOE,
    DURA,
    EXTRACEREBRAL_CSF,
    EYE,
    HEAD,
    HEAD_LABELS,
    INNER_TABLE,
    MASTICATORY_MUSCLE,
    NECK_MUSCLE,
    OUTER_TABLE,
    SKIN,
    SPINAL_CORD,
    SUBCUTANEOUS_FAT,
    VERTEBRA,
    build_cranium,
    build_head,
    head_brain_mask,
    head_to_tissue,
)
from brainseg_tf.errors import ConfigError, LabelError
from brainseg_tf.io import Image, LabelMap
from brainseg_tf.labels import TISSUE

CENTRE = np.array([10.0, -20.0, 30.0])  # world mm of the synthetic brain's centre: not the origin, on purpose
RADII = np.array([66.0, 84.0, 60.0])  # adult-sized ellipsoid brain (MNI152: 71 x 90 x 76 mm half extents)
BONE = (INNER_TABLE, DIPLOE, OUTER_TABLE)
LAYERS = (  # cranial layers from the brain outward: (labels, config range names)
    ((EXTRACEREBRAL_CSF,), ("extracerebral_csf_mm",)),
    ((DURA,), ("dura_mm",)),
    ((INNER_TABLE,), ("inner_table_mm",)),
    ((DIPLOE,), ("diploe_mm",)),
    ((OUTER_TABLE,), ("outer_table_mm",)),
    ((SUBCUTANEOUS_FAT, SKIN), ("scalp_fat_mm", "skin_mm")),  # over the vertex: no temporal muscle
)


def synthetic_brain(voxel: float, scale: float = 1.0) -> LabelMap:
    """An ellipsoid brain of TISSUE values: white matter inside gray matter, a CSF ventricle, and a brain stem
    running down to the grid's bottom (as in the MNI152 field of view), on a RAS+ grid of ``voxel`` mm."""
    radii = RADII * scale
    half = np.ceil((radii + 8.0) / voxel).astype(int)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = CENTRE - half * voxel
    offset = np.indices(2 * half + 1).astype(float) * voxel - (half * voxel).reshape(3, 1, 1, 1)
    radius = np.sqrt(((offset / radii.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
    labels = np.zeros(offset.shape[1:], dtype=np.int32)
    labels[radius <= 1.0] = 2
    labels[radius <= 0.8] = 3
    labels[np.sqrt(((offset / (0.15 * radii.reshape(3, 1, 1, 1))) ** 2).sum(axis=0)) <= 1.0] = 1
    stem = (np.hypot(offset[0], offset[1] + 0.25 * radii[1]) <= 12.0 * scale) & (offset[2] < 0)
    labels[stem] = 3
    return LabelMap(labels, affine)


@pytest.fixture(scope="module")
def brain4() -> LabelMap:
    return synthetic_brain(4.0)


@pytest.fixture(scope="module")
def adult2() -> tuple[LabelMap, LabelMap]:
    """(brain, head) at 2 mm, built once for the geometry and thickness tests."""
    brain = synthetic_brain(2.0)
    return brain, build_head(brain, np.random.default_rng(7))


def world_of(volume: LabelMap, indices: np.ndarray) -> np.ndarray:
    """(N, 3) world mm of (N, 3) voxel indices."""
    return indices @ volume.affine[:3, :3].T + volume.affine[:3, 3]


def label_centroid(head: LabelMap, labels: tuple[int, ...]) -> np.ndarray:
    return world_of(head, np.argwhere(np.isin(head.array, labels))).mean(axis=0)


# --- labels --------------------------------------------------------------------------------------------


def test_label_table_is_contiguous_unique_and_starts_with_the_tissue_values() -> None:
    values = [v for v, _ in HEAD_LABELS]
    assert values == list(range(len(HEAD_LABELS))) and HEAD.values == tuple(values)
    assert HEAD.names[: TISSUE.num_classes] == ("air", *TISSUE.names[1:])
    assert HEAD.names[EYE] == "eye" and HEAD.names[SPINAL_CORD] == "spinal cord" and HEAD.names[SKIN] == "skin"
    assert BRAIN_LABELS == (1, 2, 3)


def test_tissue_mapping_keeps_the_brain_and_sends_every_other_label_to_background() -> None:
    every = np.arange(len(HEAD_LABELS), dtype=np.int32).reshape(-1, 1, 1)
    assert head_to_tissue(every).ravel().tolist() == [0, 1, 2, 3] + [0] * (len(HEAD_LABELS) - 4)
    assert head_brain_mask(every).ravel().tolist() == [False, True, True, True] + [False] * (len(HEAD_LABELS) - 4)
    assert not head_brain_mask(np.full((1, 1, 1), EXTRACEREBRAL_CSF))[0, 0, 0]  # tight masks: not brain
    volume = LabelMap(every, np.eye(4))
    mapped = head_to_tissue(volume)
    assert isinstance(mapped, LabelMap) and np.array_equal(mapped.affine, volume.affine)


@pytest.mark.parametrize("labels", [np.full((2, 2, 2), 1.0), np.full((2, 2, 2), len(HEAD_LABELS)), np.full((2, 2, 2), -1)])
def test_tissue_mapping_refuses_what_is_not_a_head_label_map(labels: np.ndarray) -> None:
    with pytest.raises(LabelError, match="Expected"):
        head_to_tissue(labels)


# --- determinism and geometry --------------------------------------------------------------------------


def test_same_seed_gives_the_same_head_and_other_seeds_or_calls_differ(brain4: LabelMap) -> None:
    first = build_head(brain4, np.random.default_rng(3))
    again = build_head(brain4, np.random.default_rng(3))
    assert np.array_equal(first.array, again.array) and np.array_equal(first.affine, again.affine)
    other = build_head(brain4, np.random.default_rng(4))
    rng = np.random.default_rng(3)
    build_head(brain4, rng)
    next_call = build_head(brain4, rng)  # one generator, consecutive calls: a fresh head each time
    for head in (other, next_call):
        assert head.shape != first.shape or not np.array_equal(head.array, first.array)


@pytest.mark.parametrize("voxel", [4.0, 2.0])
def test_brain_voxels_keep_their_labels_at_the_same_world_points(voxel: float, brain4: LabelMap, adult2) -> None:
    brain, head = (brain4, build_head(brain4, np.random.default_rng(0))) if voxel == 4.0 else adult2
    assert np.allclose(head.affine[:3, :3], brain.affine[:3, :3])
    every = np.argwhere(np.ones(brain.shape, dtype=bool))
    in_head = np.linalg.solve(head.affine, np.c_[world_of(brain, every), np.ones(len(every))].T)[:3].T
    assert np.allclose(in_head, np.round(in_head), atol=1e-6)  # the grid only grew by whole voxels
    index = np.round(in_head).astype(int)
    assert (index >= 0).all() and (index < head.shape).all()  # nothing of the brain's grid was cut off
    values = head.array[tuple(index.T)]
    source = brain.array[tuple(every.T)]
    assert np.array_equal(values[source > 0], source[source > 0])  # brain labels never overwritten
    assert not np.isin(values[source == 0], BRAIN_LABELS).any()  # and no brain label added
    assert head.array.dtype == np.uint8 and head.array.max() < len(HEAD_LABELS)


def test_grid_grows_down_for_the_neck_and_forward_for_the_face(adult2) -> None:
    brain, head = adult2
    brain_low = world_of(brain, np.argwhere(brain.array > 0)).min(axis=0)
    brain_high = world_of(brain, np.argwhere(brain.array > 0)).max(axis=0)
    head_voxels = world_of(head, np.argwhere(head.array > 0))
    assert head_voxels[:, 2].min() < brain_low[2] - 60  # a neck
    assert head_voxels[:, 1].max() > brain_high[1] + 10  # a face in front of the frontal lobe
    for face in (head.array[0], head.array[-1], head.array[:, 0], head.array[:, -1], head.array[:, :, -1]):
        assert (face == AIR).all()  # air around the head, except where the neck leaves the canvas
    assert (head.array[:, :, 0] == NECK_MUSCLE).any()


# --- layers --------------------------------------------------------------------------------------------


def test_every_cranial_layer_voxel_lies_within_its_cumulative_configured_distance(adult2) -> None:
    _, head = adult2
    config, voxel = HeadConfig(), 2.0
    distance = ndimage.distance_transform_edt(~head_brain_mask(head.array)) * voxel
    low = high = 0.0
    for labels, names in LAYERS[:5]:  # the layers drawn by distance from the brain
        (lo, hi), = (getattr(config, name) for name in names)
        depths = distance[np.isin(head.array, labels)]
        assert depths.size, f"no voxel of {names}"
        assert depths.min() > low - 1e-6 and depths.max() <= high + hi + 1e-6, names
        low, high = low + lo, high + hi


def test_layer_thicknesses_over_the_vertex_are_within_their_ranges(adult2) -> None:
    _, head = adult2
    config, voxel = HeadConfig(), 2.0
    brain = head_brain_mask(head.array)
    distance = ndimage.distance_transform_edt(~brain) * voxel
    tops = np.where(brain.any(axis=2), brain.shape[2] - 1 - np.argmax(brain[:, :, ::-1], axis=2), -1)
    columns = np.argwhere(tops >= tops.max() - 5)  # columns whose brain top lies within 10 mm of the vertex
    assert len(columns) > 50
    measured = np.zeros((len(columns), len(LAYERS)))
    for n, (i, j) in enumerate(columns):
        labels, depth = head.array[i, j, tops[i, j]:], distance[i, j, tops[i, j]:]
        reached = [depth[np.isin(labels, sum((l for l, _ in LAYERS[: k + 1]), ()))].max(initial=0.0) for k in range(len(LAYERS))]
        measured[n] = np.diff([0.0, *reached])
    tolerance = voxel + 1.0  # one voxel of sampling, plus the fields' change over a few mm
    for k, (_, names) in enumerate(LAYERS):
        low = sum(getattr(config, name)[0] for name in names)
        high = sum(getattr(config, name)[1] for name in names)
        assert measured[:, k].min() >= low - tolerance and measured[:, k].max() <= high + tolerance, (names, measured[:, k].min(), measured[:, k].max())
    assert measured[:, 2:5].sum(axis=1).min() >= voxel  # a closed skull everywhere on top
    assert np.ptp(measured[:, 2:5].sum(axis=1)) > voxel  # the skull's thickness varies around the head


def test_skin_is_the_outermost_layer_within_its_range(adult2) -> None:
    _, head = adult2
    config, voxel = HeadConfig(), 2.0
    depth = ndimage.distance_transform_edt(head.array != AIR) * voxel
    skin = head.array == SKIN
    assert depth[skin].max() <= max(config.skin_mm[1], voxel) + 1e-6
    outermost = (depth > 0) & (depth <= voxel) & ~np.isin(head.array, (*BRAIN_LABELS, EXTRACEREBRAL_CSF, DURA, *BONE))
    outermost[:, :, :2] = False  # where the neck leaves the canvas there is no air to measure from
    assert skin[outermost].mean() == 1.0


def test_temporal_muscle_lies_over_the_temporal_fossae_only(adult2) -> None:
    brain, head = adult2
    muscle = world_of(head, np.argwhere(head.array == MASTICATORY_MUSCLE))
    muscle = muscle[muscle[:, 2] > CENTRE[2] - 0.3 * RADII[2]]  # above the skull base: the temporalis, not the jaw's muscles
    assert len(muscle) > 0
    assert (np.abs(muscle[:, 0] - CENTRE[0]) > 0.5 * RADII[0]).all()  # lateral
    top = world_of(brain, np.argwhere(brain.array > 0))[:, 2].max()
    assert muscle[:, 2].max() < top - 10  # not over the vertex


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_skull_encloses_the_brain(scale: float, brain4: LabelMap) -> None:
    head = build_head(brain4, np.random.default_rng(11), HeadConfig(thickness_scale=scale))
    labels = head.array
    intracranial = np.isin(labels, (*BRAIN_LABELS, EXTRACEREBRAL_CSF, DURA))
    touching_air = ndimage.binary_dilation(labels == AIR) & intracranial  # 6-neighbours
    assert not touching_air.any()
    brain = head_brain_mask(labels)
    tops = brain.shape[2] - 1 - np.argmax(brain[:, :, ::-1], axis=2)
    for i, j in np.argwhere(brain.any(axis=2)):  # every ray upward from the brain meets bone before air
        above = labels[i, j, tops[i, j] + 1:]
        first_air = np.argmax(above == AIR) if (above == AIR).any() else above.size
        assert np.isin(above[:first_air], BONE).any()


# --- cranium only ----------------------------------------------------------------------------------------


def test_a_cranium_is_the_brain_with_the_cranial_layers_within_its_reach_and_nothing_else(brain4: LabelMap) -> None:
    reach, voxel = 16.0, 4.0
    cranium = build_cranium(brain4, np.random.default_rng(5), reach_mm=reach)
    again = build_cranium(brain4, np.random.default_rng(5), reach_mm=reach)
    assert np.array_equal(cranium.array, again.array) and np.array_equal(cranium.affine, again.affine)
    assert not np.array_equal(build_cranium(brain4, np.random.default_rng(6), reach_mm=reach).array, cranium.array)
    cranial = {AIR, *BRAIN_LABELS, EXTRACEREBRAL_CSF, DURA, *BONE, MASTICATORY_MUSCLE, SUBCUTANEOUS_FAT}
    assert set(np.unique(cranium.array)) <= cranial and set(BONE).issubset(np.unique(cranium.array))  # CSF and dura: under a 4 mm voxel
    brain = head_brain_mask(cranium.array)
    distance = ndimage.distance_transform_edt(~brain) * voxel
    assert distance[cranium.array != AIR].max() <= reach + 1e-6  # nothing painted beyond the reach
    assert (distance[cranium.array == AIR] > voxel).all()  # the brain is wrapped: no air next to it
    # the brain's own voxels keep their labels at the same world points (whole-voxel growth, as build_head)
    every = np.argwhere(brain4.array > 0)
    index = np.round(np.linalg.solve(cranium.affine, np.c_[world_of(brain4, every), np.ones(len(every))].T)[:3].T).astype(int)
    assert np.array_equal(cranium.array[tuple(index.T)], brain4.array[tuple(every.T)])
    # the canvas is the brain's box grown by the reach (and 2 voxels), far smaller than a full head's
    assert np.all(np.array(cranium.shape) <= np.array(brain4.shape) + 2 * (np.ceil(reach / voxel) + 3))
    assert cranium.array.size < build_head(brain4, np.random.default_rng(5)).array.size


def test_a_cranium_layers_lie_within_their_cumulative_configured_distances(brain4: LabelMap) -> None:
    config, voxel = HeadConfig(), 4.0
    cranium = build_cranium(brain4, np.random.default_rng(2), config, reach_mm=30.0)
    distance = ndimage.distance_transform_edt(~head_brain_mask(cranium.array)) * voxel
    low = high = 0.0
    for labels, names in LAYERS[:5]:
        (lo, hi), = (getattr(config, name) for name in names)
        depths = distance[np.isin(cranium.array, labels)]
        if depths.size:  # at 4 mm a thin layer may be skipped by the sampling
            assert depths.min() > low - 1e-6 and depths.max() <= high + hi + voxel + 1e-6, names
        low, high = low + lo, high + hi


def test_a_cranium_refuses_a_reach_that_is_not_positive(brain4: LabelMap) -> None:
    for reach in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="reach_mm > 0"):
            build_cranium(brain4, np.random.default_rng(0), reach_mm=reach)


# --- face and neck --------------------------------------------------------------------------------------


def test_eyes_lie_anterior_and_inferior_of_the_brain_one_left_one_right(adult2) -> None:
    _, head = adult2
    components, count = ndimage.label(head.array == EYE)
    assert count == 2
    centres = np.array([world_of(head, np.argwhere(components == n)).mean(axis=0) for n in (1, 2)])
    assert (centres[:, 1] > CENTRE[1] + 0.5 * RADII[1]).all()  # anterior
    assert (centres[:, 2] < CENTRE[2]).all()  # inferior
    assert np.sort(np.sign(centres[:, 0] - CENTRE[0])).tolist() == [-1.0, 1.0]  # one left, one right
    assert abs(abs(centres[0, 0] - CENTRE[0]) - abs(centres[1, 0] - CENTRE[0])) < 8.0  # about symmetric


def test_neck_and_spine_lie_below_the_brain_and_the_cord_continues_the_brain_stem(adult2) -> None:
    brain, head = adult2
    brain_points = world_of(brain, np.argwhere(brain.array > 0))
    cord = world_of(head, np.argwhere(head.array == SPINAL_CORD))
    assert cord[:, 2].max() >= brain_points[:, 2].min() - 2.0  # starts at the brain stem's end
    assert cord[:, 2].min() < brain_points[:, 2].min() - 60
    vertebrae = label_centroid(head, (VERTEBRA,))
    eyes = label_centroid(head, (EYE,))
    assert vertebrae[2] < brain_points[:, 2].min() and vertebrae[1] < eyes[1] - 40  # inferior, posterior
    assert label_centroid(head, (NECK_MUSCLE,))[2] < CENTRE[2] - RADII[2]


def test_a_child_sized_brain_gets_a_smaller_complete_head(brain4: LabelMap) -> None:
    child = synthetic_brain(4.0, scale=0.65)
    config = HeadConfig(thickness_scale=0.65, face_scale=(0.7, 0.8))
    head = build_head(child, np.random.default_rng(5), config)
    adult = build_head(brain4, np.random.default_rng(5))
    assert np.prod(head.shape) < 0.5 * np.prod(adult.shape)
    present = set(np.unique(head.array).tolist())
    assert {EYE, VERTEBRA, SPINAL_CORD, SKIN, OUTER_TABLE} <= present  # an inner table under 1.6 mm may miss 4 mm voxels
    assert label_centroid(head, (EYE,))[2] < CENTRE[2]


# --- validation and config -----------------------------------------------------------------------------


def _flipped(brain: LabelMap) -> LabelMap:
    affine = brain.affine.copy()
    affine[0, 0] *= -1
    return LabelMap(brain.array, affine)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda b: Image(b.array.astype(np.float32), b.affine), TypeError, "LabelMap"),
        (lambda b: b.array, TypeError, "LabelMap"),
        (lambda b: LabelMap(b.array[..., None], b.affine), ValueError, "3D"),
        (lambda b: LabelMap(b.array.astype(np.float32), b.affine), LabelError, "integer"),
        (lambda b: LabelMap(b.array + 1, b.affine), LabelError, "TISSUE"),
        (lambda b: LabelMap(np.zeros_like(b.array), b.affine), ValueError, "brain voxels"),
        (_flipped, ValueError, "RAS"),
        (lambda b: LabelMap(b.array, np.diag([4.0, 4.0, 5.0, 1.0])), ValueError, "isotropic"),
    ],
    ids=["image", "array", "4d", "float", "out-of-range", "empty", "las", "anisotropic"],
)
def test_bad_brains_are_refused_naming_what_was_expected(make, error, words: str, brain4: LabelMap) -> None:
    with pytest.raises(error, match=words):
        build_head(make(brain4), np.random.default_rng(0))


def test_a_generator_is_required(brain4: LabelMap) -> None:
    with pytest.raises(TypeError, match="Generator"):
        build_head(brain4, np.random.RandomState(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"extracerebral_csf_mm": (3.0, 1.0)},
        {"dura_mm": (-1.0, 1.0)},
        {"skin_mm": (1.0,)},
        {"face_scale": (0.0, 1.0)},
        {"brain_scale": (0.0, 1.0)},
        {"brain_scale": (1.1, 0.9)},
        {"anatomy": "skull"},
        {"thickness_scale": 0.0},
        {"thickness_smoothness_mm": float("nan")},
        {"size_jitter": 1.0},
        {"shape_warp": 0.5},
        {"neck_pitch_deg": -1.0},
        {"neck_length_mm": -5.0},
        {"brain_aspect_jitter": 0.51},
        {"brain_aspect_jitter": -0.1},
        {"brain_scale_probability": 1.01},
        {"layer_scale": (0.0, 1.0)},
        {"layer_scale": (1.2, 0.8)},
        {"brain_scale_probability": -0.01},
        {"tissue_split_probability": 1.5},
        {"tissue_parts": 0},
        {"tissue_parts": 9},
        {"tissue_parts": True},
        {"tissue_parts": 2.0},
        {"tissue_part_spacing_mm": (0.0, 4.0)},
        {"child_layers": 1},
    ],
    ids=lambda change: next(iter(change)),
)
def test_out_of_range_config_values_are_refused_by_name(change: dict, brain4: LabelMap) -> None:
    name = next(iter(change))
    with pytest.raises(ConfigError, match=f"heads.{name}"):
        build_head(brain4, np.random.default_rng(0), dataclasses.replace(HeadConfig(), **change))


def test_the_edges_of_the_image_settings_ranges_are_accepted(brain4: LabelMap) -> None:
    edges = HeadConfig(brain_aspect_jitter=0.5, brain_scale_probability=0.0, tissue_split_probability=1.0, tissue_parts=8, tissue_part_spacing_mm=(0.1, 0.1))
    assert build_head(brain4, np.random.default_rng(0), edges).shape == build_head(brain4, np.random.default_rng(0)).shape


def test_head_config_lives_in_the_generator_config() -> None:
    assert GeneratorConfig().heads == HeadConfig()
    config = load_config(overrides={"generator.heads.skin_mm": [1, 2], "generator.heads.thickness_scale": 0.6})
    assert config.generator.heads.skin_mm == (1.0, 2.0) and config.generator.heads.thickness_scale == 0.6
    with pytest.raises(ConfigError):
        load_config(overrides={"generator.heads.skin_mm": 2})


# --- the real template ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_head_around_the_mni152_brain_at_2_mm() -> None:
    from brainseg_tf.datasets.embedded import load_template, tissue_labels

    template = load_template(2.0)
    labels = tissue_labels(template.gray_matter, template.white_matter, template.brain_mask).astype(np.int32)
    brain = LabelMap(labels, template.image.affine)
    start = time.perf_counter()
    head = build_head(brain, np.random.default_rng(2026))
    print(f"\nMNI152 head at 2 mm: {time.perf_counter() - start:.2f} s, canvas {head.shape}")
    offset = np.round(np.linalg.solve(head.affine, brain.affine)[:3, 3]).astype(int)
    inner = head.array[tuple(slice(o, o + n) for o, n in zip(offset, brain.shape))]
    assert np.array_equal(head_to_tissue(inner), labels)  # the brain, voxel for voxel, and nothing else of it
    present = set(np.unique(head.array).tolist())
    assert {EYE, VERTEBRA, SPINAL_CORD, SKIN, MASTICATORY_MUSCLE, *BONE} <= present
    assert not (ndimage.binary_dilation(head.array == AIR) & np.isin(head.array, (*BRAIN_LABELS, EXTRACEREBRAL_CSF))).any()
