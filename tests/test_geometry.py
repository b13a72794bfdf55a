"""Geometry: conform to RAS+ at a target voxel size, and the exact inverse back to the input grid."""

from __future__ import annotations

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest
from scipy import ndimage

from brainseg_tf.geometry import ConformInverse, _separable_linear, conform, reorient
from brainseg_tf.io import Image, LabelMap, Volume, voxel_sizes

SHAPE = (10, 12, 14)
ORIGIN = np.array([-7.5, 12.0, 3.25])


def _axis_affine(codes: str, voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Affine whose voxel axes point along ``codes`` (e.g. "LIA") with the given edge lengths."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world_axis, sign) in enumerate(nio.axcodes2ornt(tuple(codes))):
        affine[int(world_axis), axis] = sign * voxel_size[axis]
    affine[:3, 3] = ORIGIN
    return affine


def _rotation(axis: int, degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


def _oblique_affine() -> np.ndarray:
    """1 mm voxels, rotated 20 degrees about x and then 20 degrees about z."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(2, 20.0) @ _rotation(0, 20.0)
    affine[:3, 3] = ORIGIN
    return affine


AFFINES = {codes: _axis_affine(codes) for codes in ("RAS", "LAS", "LPS", "LIA", "PIL")}
AFFINES["oblique"] = _oblique_affine()


def _blocky_labels(shape: tuple[int, ...], block: int = 4, seed: int = 0) -> np.ndarray:
    """Random labels 0..5 in cubes of ``block`` voxels (int32)."""
    coarse = np.random.default_rng(seed).integers(0, 6, size=[-(-n // block) for n in shape])
    grid = np.ix_(*[np.arange(n) // block for n in shape])
    return coarse[grid].astype(np.int32)


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (..., 3) of every voxel centre."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _smooth(world: np.ndarray) -> np.ndarray:
    """A slowly varying field of world position (wavelengths of tens of mm)."""
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    return (np.sin(x / 6.0) + np.cos(y / 7.0) + 0.05 * z).astype(np.float32)


@pytest.mark.parametrize("name", AFFINES)
def test_conform_gives_ras_and_keeps_world_positions(name: str) -> None:
    labels = np.random.default_rng(1).integers(0, 1000, size=SHAPE).astype(np.int32)
    affine = AFFINES[name]
    conformed, _ = conform(LabelMap(labels, affine), voxel_size=1.0)

    assert nib.aff2axcodes(conformed.affine) == ("R", "A", "S")
    np.testing.assert_allclose(voxel_sizes(conformed.affine), 1.0, atol=1e-9)
    assert sorted(conformed.shape) == sorted(SHAPE)
    for voxel in [(0, 0, 0), (9, 11, 13), (3, 7, 2), (9, 0, 5)]:
        world = affine @ [*voxel, 1.0]
        target = np.linalg.solve(conformed.affine, world)[:3]
        np.testing.assert_allclose(target, np.round(target), atol=1e-6)
        assert conformed.array[tuple(np.round(target).astype(int))] == labels[voxel]


@pytest.mark.parametrize("name", AFFINES)
def test_inverse_returns_exactly_the_input(name: str) -> None:
    labels = np.random.default_rng(2).integers(0, 1000, size=SHAPE).astype(np.int32)
    affine = AFFINES[name]
    conformed, inverse = conform(LabelMap(labels, affine))
    back = inverse(conformed)  # a LabelMap: nearest, from its kind
    assert back.array.shape == SHAPE
    assert back.array.dtype == np.int32
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_array_equal(back.affine, affine)


def test_conform_at_the_target_grid_keeps_the_array_and_its_memory_order() -> None:
    """A 1 mm RAS NIfTI array (Fortran-ordered, as nibabel reads it) is not copied; the inverse is C-ordered."""
    image = np.asfortranarray(np.random.default_rng(3).random(SHAPE, dtype=np.float32))
    conformed, inverse = conform(Image(image, AFFINES["RAS"]), voxel_size=1.0)
    assert np.shares_memory(conformed.array, image) and conformed.array.flags.f_contiguous
    back = inverse(conformed.array + 1.0, interpolation="linear")
    assert back.array.flags.c_contiguous
    np.testing.assert_array_equal(back.array, image + 1.0)


@pytest.mark.parametrize("name", AFFINES)
def test_inverse_only_reorients_when_conform_did_not_resample(name: str) -> None:
    image = Image(np.zeros(SHAPE, np.float32), AFFINES[name])
    assert conform(image, voxel_size=1.0)[1].only_reorients
    assert not conform(image, voxel_size=2.0)[1].only_reorients
    assert not conform(image, voxel_size=(1.0, 1.0, 1.2))[1].only_reorients


@pytest.mark.parametrize("name", AFFINES)
def test_reorient_is_a_pure_permutation(name: str) -> None:
    array = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)
    reoriented, orientation = reorient(Volume(array, AFFINES[name]))
    assert nib.aff2axcodes(reoriented.affine) == ("R", "A", "S")
    assert np.array_equal(np.sort(reoriented.array, axis=None), np.sort(array, axis=None))
    np.testing.assert_array_equal(nio.apply_orientation(array, orientation), reoriented.array)


ANISOTROPIC = {
    "1x1x3 mm LAS": ((20, 18, 8), _axis_affine("LAS", (1.0, 1.0, 3.0))),
    "3x1x1 mm PIL": ((8, 20, 18), _axis_affine("PIL", (3.0, 1.0, 1.0))),
    "0.7 mm LIA": ((28, 26, 24), _axis_affine("LIA", (0.7, 0.7, 0.7))),
}


@pytest.mark.parametrize("name", ANISOTROPIC)
def test_resampled_image_matches_the_field_and_survives_the_round_trip(name: str) -> None:
    shape, affine = ANISOTROPIC[name]
    image = _smooth(_world(affine, shape))
    conformed, inverse = conform(Image(image, affine), voxel_size=1.0)

    assert nib.aff2axcodes(conformed.affine) == ("R", "A", "S")
    np.testing.assert_allclose(voxel_sizes(conformed.affine), 1.0, atol=1e-9)
    assert conformed.array.dtype == np.float32
    inner = tuple(slice(3, -3) for _ in range(3))  # away from edge clamping
    expected = _smooth(_world(conformed.affine, conformed.shape))
    assert np.abs(conformed.array[inner] - expected[inner]).max() < 0.05

    back = inverse(conformed)  # an Image: linear, from its kind
    assert back.array.shape == shape
    np.testing.assert_array_equal(back.affine, affine)
    error = np.abs(back.array - image)
    assert error[inner].max() < 0.05
    assert error.mean() < 0.02


@pytest.mark.parametrize("name", ["1x1x3 mm LAS", "3x1x1 mm PIL"])
def test_label_round_trip_after_upsampling_is_exact(name: str) -> None:
    shape, affine = ANISOTROPIC[name]
    labels = _blocky_labels(shape, block=3)
    conformed, inverse = conform(LabelMap(labels, affine))
    assert conformed.array.dtype == np.int32
    back = inverse(conformed)  # a LabelMap: nearest, from its kind
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_array_equal(back.array, labels)


def test_label_round_trip_after_downsampling_only_moves_boundaries() -> None:
    """0.7 mm -> 1 mm drops about 2 in 7 rows per axis, so only voxels at label boundaries change."""
    shape, affine = ANISOTROPIC["0.7 mm LIA"]
    labels = _blocky_labels(shape, block=8)
    conformed, inverse = conform(LabelMap(labels, affine))
    assert set(np.unique(conformed.array)) <= set(np.unique(labels))
    back = inverse(conformed)  # a LabelMap: nearest, from its kind
    assert back.array.shape == shape
    np.testing.assert_array_equal(back.affine, affine)
    assert np.mean(back.array == labels) >= 0.9
    padded = np.pad(labels, 1, mode="edge")
    for i, j, k in np.argwhere(back.array != labels):
        assert back.array[i, j, k] in padded[i : i + 3, j : j + 3, k : k + 3]


def test_conformed_field_of_view_is_centred_on_the_input() -> None:
    shape, affine = ANISOTROPIC["1x1x3 mm LAS"]
    conformed, _ = conform(Image(np.zeros(shape, dtype=np.float32), affine))
    centre_in = affine @ [*((np.asarray(shape) - 1) / 2), 1.0]
    centre_out = conformed.affine @ [*((np.asarray(conformed.shape) - 1) / 2), 1.0]
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-9)
    assert conformed.shape == (20, 18, 24)


def test_probability_maps_go_back_with_linear_interpolation() -> None:
    shape, affine = ANISOTROPIC["0.7 mm LIA"]
    field = _smooth(_world(affine, shape))
    foreground = 1.0 / (1.0 + np.exp(-2.0 * field))
    probabilities = np.stack([1.0 - foreground, foreground], axis=-1).astype(np.float32)

    conformed, inverse = conform(Image(probabilities, affine))
    assert conformed.array.shape == (*conformed.shape, 2)
    back = inverse(conformed.array, interpolation="linear")
    assert back.array.shape == (*shape, 2)
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_allclose(back.array.sum(axis=-1), 1.0, atol=1e-5)
    linear_error = np.abs(back.array - probabilities).mean()
    nearest_error = np.abs(inverse(conformed.array, interpolation="nearest").array - probabilities).mean()
    assert linear_error < 0.01
    assert linear_error < 0.7 * nearest_error


def test_linear_interpolation_of_integer_images_is_not_truncated() -> None:
    shape, affine = ANISOTROPIC["1x1x3 mm LAS"]
    ramp = np.ascontiguousarray(np.broadcast_to(np.arange(shape[2], dtype=np.int16), shape))
    conformed, _ = conform(Image(ramp, affine))
    as_float, _ = conform(Image(ramp.astype(np.float32), affine))
    assert conformed.array.dtype == np.float32
    np.testing.assert_allclose(conformed.array, as_float.array, atol=1e-6)
    assert not np.allclose(conformed.array, np.round(conformed.array))


@pytest.mark.parametrize("voxel_size", [0.0, -1.0, (1.0, 0.0, 1.0), float("nan"), float("inf")])
def test_conform_refuses_bad_voxel_sizes(voxel_size: float | tuple[float, ...]) -> None:
    volume = Image(np.zeros(SHAPE, dtype=np.float32), AFFINES["RAS"])
    with pytest.raises(ValueError, match="voxel_size"):
        conform(volume, voxel_size=voxel_size)


def test_conform_takes_the_interpolation_from_the_kind_of_volume() -> None:
    """A label map is never interpolated linearly; a bare Volume, whose kind is unknown, is refused."""
    labels = np.zeros((8, 8, 8), np.int32)
    labels[2:6, 2:6, 2:6] = 7
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    conformed, inverse = conform(LabelMap(labels, affine), voxel_size=1.0)
    assert isinstance(conformed, LabelMap) and conformed.array.dtype == np.int32
    assert set(np.unique(conformed.array)) == {0, 7}  # no in-between values
    assert isinstance(inverse(conformed), LabelMap)
    with pytest.raises(ValueError, match="nearest interpolation for a LabelMap"):
        inverse(conformed, interpolation="linear")
    image, _ = conform(Image(labels.astype(np.float32), affine), voxel_size=1.0)
    assert isinstance(image, Image) and len(np.unique(image.array)) > 2  # linear: in-between values
    with pytest.raises(ValueError, match="Image or a LabelMap"):
        conform(Volume(labels, affine), voxel_size=1.0)
    with pytest.raises(ValueError, match="interpolation"):
        inverse(conformed.array)  # a bare array needs its interpolation named


def test_inverse_refuses_arrays_off_the_conformed_grid() -> None:
    conformed, inverse = conform(Image(np.zeros(SHAPE, dtype=np.float32), AFFINES["LIA"]))
    assert isinstance(inverse, ConformInverse)
    with pytest.raises(ValueError, match="conformed grid"):
        inverse(np.zeros(SHAPE[::-1] + (1,), dtype=np.float32), "linear")
    with pytest.raises(ValueError, match="interpolation"):
        inverse(conformed.array, interpolation="spline")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_inverse_within_a_region_equals_the_whole_inverse_for_a_volume_zero_outside_it(name: str, interpolation: str) -> None:
    affine = AFFINES[name].copy()
    affine[:3, :3] = affine[:3, :3] * np.array([1.3, 0.9, 1.1])  # anisotropic: conform resamples
    _, inverse = conform(Image(np.zeros((30, 26, 22), np.float32), affine), 2.0)
    region = (slice(4, 11), slice(3, 9), slice(5, 12))
    values = np.zeros(inverse.conformed_grid.shape, np.float32)
    values[region] = np.random.default_rng(0).random(values[region].shape, dtype=np.float32) + 0.5
    whole = inverse(values, interpolation).array
    within = inverse(values, interpolation, region=region).array
    assert whole.shape == within.shape and np.count_nonzero(whole) > 0
    np.testing.assert_allclose(within, whole, atol=1e-5)
    empty = inverse(np.zeros_like(values), interpolation, region=(slice(0, 0), slice(0, 0), slice(0, 0))).array
    assert not empty.any()


@pytest.mark.parametrize(
    ("shape", "scale", "offset", "output"),
    [
        ((9, 11, 10), (0.5, 0.5, 0.5), (-0.3, 0.2, 0.7), (18, 22, 20)),  # upsampling, points before the first voxel
        ((20, 20, 20), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5), (12, 12, 12)),  # downsampling, points beyond the last voxel
        ((5, 1, 7), (0.7, 1.3, 3.1), (-2.0, 0.0, -1.0), (20, 3, 4)),  # a single-voxel axis, mixed scales
        ((6, 6, 6), (1.0, 1.0, 1.0), (1.0, 0.0, 5.0), (6, 6, 6)),  # integer points, exactly the last voxel
    ],
)
def test_separable_linear_resampling_equals_trilinear_interpolation(shape, scale, offset, output) -> None:
    array = np.random.default_rng(7).random(shape).astype(np.float32)
    expected = ndimage.affine_transform(array, np.array(scale), offset=np.array(offset), output_shape=output, order=1, mode="nearest", prefilter=False)
    received = _separable_linear(array, np.array(scale), np.array(offset), output)
    assert received.shape == output and received.dtype == np.float32
    np.testing.assert_allclose(received, expected, atol=1e-6)
