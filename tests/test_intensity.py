"""Intensity normalisation: range, dtype, robustness to outliers and background, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.intensity import _low_percentile, normalize_intensity

SHAPE = (16, 16, 16)


def _head(seed: int = 0, background: int = 4) -> np.ndarray:
    """A bright cube of tissue (about 50..150) inside ``background`` voxels of zero air on each side."""
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, dtype=np.float64)
    inner = tuple(slice(background, n - background) for n in SHAPE)
    image[inner] = rng.uniform(50.0, 150.0, size=image[inner].shape)
    return image


def test_output_is_float32_in_unit_range() -> None:
    normalized = normalize_intensity(_head())
    assert normalized.dtype == np.float32
    assert normalized.shape == SHAPE
    assert normalized.min() == 0.0
    assert normalized.max() == 1.0
    assert np.isfinite(normalized).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_any_input_dtype_gives_float32(dtype: type) -> None:
    normalized = normalize_intensity(_head().astype(dtype))
    assert normalized.dtype == np.float32
    assert 0.0 <= normalized.min() and normalized.max() <= 1.0


def test_scaling_is_monotonic_and_keeps_background_at_zero() -> None:
    image = _head()
    normalized = normalize_intensity(image)
    assert (normalized[image == 0] == 0).all()
    order = np.argsort(image, axis=None)
    assert (np.diff(normalized.ravel()[order]) >= 0).all()


def test_percentile_clipping_ignores_outliers() -> None:
    image = _head()
    clean = normalize_intensity(image)
    image[8, 8, 8] = 1e6  # one hot pixel
    image[9, 9, 9] = -1e4  # and one cold one, below the air
    normalized = normalize_intensity(image)
    assert normalized[8, 8, 8] == 1.0
    assert normalized[9, 9, 9] == 0.0
    tissue = image > 0
    tissue[8, 8, 8] = False
    # Without clipping the tissue would be squeezed into [0, 1.5e-4]; with it, it keeps its spread.
    assert normalized[tissue].max() > 0.95
    # Neither outlier (nor the cold one dragging the air into the foreground) moves the scaling.
    np.testing.assert_allclose(normalized[tissue], clean[tissue], atol=0.02)


def test_amount_of_background_does_not_move_the_scaling() -> None:
    tissue = np.random.default_rng(1).uniform(50.0, 150.0, size=(8, 8, 8))
    small = np.pad(tissue, 1)
    large = np.pad(tissue, 12)
    inner_small = normalize_intensity(small)[1:-1, 1:-1, 1:-1]
    inner_large = normalize_intensity(large)[12:-12, 12:-12, 12:-12]
    np.testing.assert_allclose(inner_small, inner_large, atol=1e-6)


def test_two_level_image_falls_back_to_min_max() -> None:
    image = np.zeros(SHAPE)
    image[4:8, 4:8, 4:8] = 7.0
    normalized = normalize_intensity(image)
    assert set(np.unique(normalized)) == {0.0, 1.0}


def test_full_percentile_range_is_plain_min_max_scaling() -> None:
    image = _head(seed=2)
    normalized = normalize_intensity(image, lower_percentile=0.0, upper_percentile=100.0)
    tissue = image > 0
    expected = (image[tissue] - image[tissue].min()) / (image[tissue].max() - image[tissue].min())
    np.testing.assert_allclose(normalized[tissue], expected, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 5.0, -3.0])
def test_constant_image_raises(value: float) -> None:
    with pytest.raises(ValueError, match="constant image"):
        normalize_intensity(np.full(SHAPE, value))


@pytest.mark.parametrize(
    ("image", "phrase"),
    [
        (np.zeros((0, 4, 4)), "empty"),
        (np.where(np.arange(64).reshape(4, 4, 4) == 5, np.nan, 1.0), "1 NaN or infinite"),
        (np.where(np.arange(64).reshape(4, 4, 4) < 2, np.inf, 1.0), "2 NaN or infinite"),
    ],
    ids=["empty", "nan", "inf"],
)
def test_empty_or_non_finite_images_raise(image: np.ndarray, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        normalize_intensity(image)


@pytest.mark.parametrize(("lower", "upper"), [(50.0, 50.0), (90.0, 10.0), (-1.0, 99.0), (1.0, 101.0)])
def test_bad_percentiles_raise(lower: float, upper: float) -> None:
    with pytest.raises(ValueError, match="lower_percentile"):
        normalize_intensity(_head(), lower_percentile=lower, upper_percentile=upper)


@pytest.mark.parametrize("background", [0, 1, 5, 400])
def test_low_percentile_shortcut_equals_numpy_percentile(background: int) -> None:
    """A field of one minimum value short-cuts the sort; fewer such voxels than the rank do not."""
    rng = np.random.default_rng(background)
    image = np.concatenate([np.full(background, -3.0, np.float32), rng.random(1000, dtype=np.float32)]).reshape(-1, 1, 1)
    for percentile in (0.0, 0.5, 2.0, 30.0):
        found = _low_percentile(image, percentile)
        expected = np.percentile(image, percentile)
        assert found == expected and found.dtype == expected.dtype


@pytest.mark.parametrize("layout", ["C", "F", "flipped", "strided"])
def test_memory_layout_changes_nothing_but_the_order_kept(layout: str) -> None:
    """Fortran-ordered images (nibabel's NIfTI arrays) stay Fortran-ordered; values never depend on the layout."""
    image = _head(seed=3).astype(np.float32)
    image[2:4, 5:9, 1:3] = np.linspace(-20.0, 400.0, 16).reshape(2, 4, 2)  # outliers on both sides, off-centre
    views = {"C": image, "F": np.asfortranarray(image), "flipped": image[::-1, :, ::-1], "strided": image[::2, 1::2]}
    normalized = normalize_intensity(views[layout])
    expected = normalize_intensity(np.ascontiguousarray(views[layout]))
    np.testing.assert_array_equal(normalized, expected)
    assert normalized.flags.f_contiguous if layout == "F" else normalized.flags.c_contiguous


def test_scaling_in_blocks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import brainseg_tf.intensity as intensity

    image = _head(seed=4)
    whole = normalize_intensity(image)
    monkeypatch.setattr(intensity, "SCALING_BLOCK", 7)  # blocks that end mid-row, and a short last block
    np.testing.assert_array_equal(normalize_intensity(image), whole)
