"""The realistic-heads suite (`evaluation.head_variants`, `evaluation.head_transforms`): grids, references, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.config import QUICK_OVERRIDES, Config, load_config
from brainseg_tf.io import Image, LabelMap, load_image, load_label_map
from evaluation import head_transforms as ht
from evaluation import head_variants as hv
from evaluation.head_variants import FLAGGED, TEMPLATE_BRAIN, VARIANTS, HeadCase, HeldOutBrain, brain_cases, head_cases, write_case

VOXEL = 2.0  # the tiny brains' voxel: every variant grid scales with it (the suite's heads are at 1 mm)
CSF, GM, WM = 1, 2, 3


def tiny_brain(radii: tuple[float, float, float] = (22.0, 25.0, 19.0), centre: tuple[float, float, float] = (4.0, -10.0, 12.0)) -> LabelMap:
    """An ellipsoid brain of TISSUE values at 2 mm (27 x 31 x 25 voxels): WM inside GM, a CSF ventricle, a brain stem."""
    r = np.asarray(radii)
    half = np.ceil((r + 4.0) / VOXEL).astype(int)
    affine = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    affine[:3, 3] = np.asarray(centre) - half * VOXEL
    offset = np.indices(2 * half + 1).astype(float) * VOXEL - (half * VOXEL).reshape(3, 1, 1, 1)
    radius = np.sqrt(((offset / r.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
    labels = np.zeros(offset.shape[1:], np.uint8)
    labels[radius <= 1.0] = GM
    labels[radius <= 0.8] = WM
    labels[radius <= 0.2] = CSF
    labels[(np.hypot(offset[0], offset[1] + 0.25 * r[1]) <= 5.0) & (offset[2] < 0)] = WM
    return LabelMap(labels, affine)


def tiny_brain_image(brain: LabelMap) -> Image:
    """The brain's own image, as a template's: smooth tissue intensities (CSF 0.3, GM 0.6, WM 1.0), 0 outside, on its grid."""
    from scipy import ndimage

    levels = np.array([0.0, 0.3, 0.6, 1.0], np.float32)[np.asarray(brain.array)]
    return Image(np.where(brain.array > 0, ndimage.gaussian_filter(levels, 0.7), 0.0).astype(np.float32), brain.affine)


@pytest.fixture(scope="module")
def cases() -> dict[str, HeadCase]:
    """Every variant of one head around the tiny brain, seed 0 (about a second)."""
    brain = tiny_brain()
    return {case.variant: case for case in brain_cases(brain, subject_id="tiny", brain_image=tiny_brain_image(brain))}


def world(volume: Image | LabelMap, indices: np.ndarray) -> np.ndarray:
    return indices @ volume.affine[:3, :3].T + volume.affine[:3, 3]


def brain_points(case: HeadCase) -> np.ndarray:
    return world(case.brain_mask, np.argwhere(case.brain_mask.array > 0))


def brain_ml(case: HeadCase) -> float:
    return float(case.brain_mask.array.sum() * np.prod(case.brain_mask.voxel_size) / 1000)


# --- every case ---------------------------------------------------------------------------------------


def test_variants_come_in_order_with_unique_file_safe_names_and_flags(cases: dict[str, HeadCase]) -> None:
    assert tuple(cases) == VARIANTS and len(VARIANTS) == 19 and VARIANTS[-2:] == (TEMPLATE_BRAIN, "child zero air")
    names = [case.name for case in cases.values()]
    assert len(set(names)) == len(names) and all(name.replace("-", "").replace(".", "").isalnum() for name in names)
    assert {v for v, case in cases.items() if case.expect_flagged} == FLAGGED == {"T2-like", "noise", "empty"}


def test_every_image_is_float32_and_its_references_lie_on_its_grid(cases: dict[str, HeadCase]) -> None:
    for case in cases.values():
        image = case.image.array
        assert image.dtype == np.float32 and np.isfinite(image).all() and image.min() >= 0, case.variant
        for reference in (case.tissue, case.brain_mask):
            assert reference.shape == case.image.shape and np.array_equal(reference.affine, case.image.affine), case.variant
            assert np.issubdtype(reference.array.dtype, np.integer)
        assert set(np.unique(case.tissue.array)) <= {0, CSF, GM, WM}
        assert np.array_equal(case.brain_mask.array, case.tissue.array > 0), case.variant  # extra-cerebral CSF is background in both


@pytest.mark.parametrize(
    ("variant", "voxel"),
    [("as-is", (1, 1, 1)), ("1x1x5 axial", (1, 1, 5)), ("1x1x5 sagittal", (5, 1, 1)), ("1x1x5 coronal", (1, 5, 1)),
     ("0.5 mm", (0.5, 0.5, 0.5)), ("child 0.8x", (1, 1, 1)), ("rotated 20deg", (1, 1, 1)), ("cropped top", (1, 1, 1))],
)  # fmt: skip
def test_each_variant_lies_on_its_own_grid(cases: dict[str, HeadCase], variant: str, voxel: tuple[float, ...]) -> None:
    case, base = cases[variant], cases["as-is"]
    assert np.allclose(case.image.voxel_size, np.multiply(voxel, VOXEL))
    assert np.allclose(case.image.affine[:3, :3], np.diag(case.image.voxel_size))  # RAS+, axis-aligned like the base
    if variant.startswith("1x1x5"):  # same field of view, same centre (brainseg_tf.geometry.conformed_grid)
        centre = world(case.image, (np.asarray(case.image.shape) - 1) / 2)
        assert np.allclose(centre, world(base.image, (np.asarray(base.image.shape) - 1) / 2), atol=VOXEL)


@pytest.mark.parametrize("variant", ["1x1x5 axial", "1x1x5 sagittal", "0.5 mm", "cropped top"])
def test_references_are_the_base_references_taken_by_nearest_neighbour(cases: dict[str, HeadCase], variant: str) -> None:
    case, base = cases[variant], cases["as-is"]
    indices = np.argwhere(np.ones(case.tissue.shape, bool))
    source = world(case.tissue, indices) @ np.linalg.inv(base.tissue.affine)[:3, :3].T + np.linalg.inv(base.tissue.affine)[:3, 3]
    values = case.tissue.array[tuple(indices.T)]
    up, down = np.floor(source + 0.5).astype(int), np.ceil(source - 0.5).astype(int)  # differ only at a tie between two voxels
    assert ((values == base.tissue.array[tuple(up.T)]) | (values == base.tissue.array[tuple(down.T)])).all()


def test_thick_slices_blur_the_image_along_their_axis_only(cases: dict[str, HeadCase]) -> None:
    axial, base = cases["1x1x5 axial"].image.array, cases["as-is"].image.array
    def roughness(image: np.ndarray, axis: int) -> float:
        return float(np.abs(np.diff(image, axis=axis)).mean())
    assert roughness(axial, 0) < roughness(base, 0)  # noise averaged over a 5-voxel slice
    assert axial.shape[:2] == base.shape[:2] and axial.shape[2] == round(base.shape[2] / 5)


# --- the geometric variants ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.8, 0.65])
def test_child_heads_hold_the_brain_scaled_in_volume(cases: dict[str, HeadCase], factor: float) -> None:
    child, base = cases[f"child {factor}x"], cases["as-is"]
    assert brain_ml(child) / brain_ml(base) == pytest.approx(factor**3, rel=0.08)
    assert np.prod(child.image.shape) < np.prod(base.image.shape)
    assert child.params["thickness_scale"] < 1 and max(child.params["face_scale"]) < 1  # type: ignore[operator]


def test_rotation_turns_the_brain_about_its_oblique_axis_by_20_degrees(cases: dict[str, HeadCase]) -> None:
    before, after = cases["as-is"], cases["rotated 20deg"]
    axes_before = np.linalg.eigh(np.cov(brain_points(before).T))[1]
    axes_after = np.linalg.eigh(np.cov(brain_points(after).T))[1]
    axes_after *= np.sign((axes_after * axes_before).sum(axis=0))  # a turn of 20 deg keeps each axis on its side
    turn = axes_after @ axes_before.T
    angle = np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1)))
    assert angle == pytest.approx(20.0, abs=2.5)
    axis = np.array([turn[2, 1] - turn[1, 2], turn[0, 2] - turn[2, 0], turn[1, 0] - turn[0, 1]])
    assert abs(axis @ np.asarray(after.params["axis"])) / np.linalg.norm(axis) > 0.97
    assert min(np.abs(after.params["axis"])) > 0.2  # type: ignore[arg-type]  # oblique
    assert brain_ml(after) == pytest.approx(brain_ml(before), rel=0.02)
    centre_before, centre_after = brain_points(before).mean(axis=0), brain_points(after).mean(axis=0)
    assert np.linalg.norm(centre_after - centre_before) < 40.0  # turned about the head's centre, not the grid origin


def test_cropped_top_loses_the_top_slices_and_part_of_the_brain(cases: dict[str, HeadCase]) -> None:
    crop, base = cases["cropped top"], cases["as-is"]
    assert crop.image.shape[:2] == base.image.shape[:2] and crop.image.shape[2] < base.image.shape[2]
    assert np.array_equal(crop.image.affine, base.image.affine)  # the bottom slices keep their world points
    assert np.array_equal(crop.image.array, base.image.array[:, :, : crop.image.shape[2]])
    assert crop.brain_mask.array.sum() < base.brain_mask.array.sum()
    assert 25.0 <= crop.params["depth_mm"] <= 35.0  # type: ignore[operator]
    assert (base.image.shape[2] - crop.image.shape[2]) * VOXEL >= crop.params["depth_mm"] - VOXEL  # type: ignore[operator]


# --- the intensity variants ---------------------------------------------------------------------------


def tissue_mean(case: HeadCase, value: int) -> float:
    return float(case.image.array[case.tissue.array == value].mean())


def test_t2_like_inverts_the_tissue_order_and_leaves_air_dark(cases: dict[str, HeadCase]) -> None:
    base, t2 = cases["as-is"], cases["T2-like"]
    assert tissue_mean(base, WM) > tissue_mean(base, GM) > tissue_mean(base, CSF)
    assert tissue_mean(t2, WM) < tissue_mean(t2, GM) < tissue_mean(t2, CSF)
    corner = (slice(0, 3),) * 3  # air outside the head
    assert np.array_equal(t2.image.array[corner], base.image.array[corner])


def test_bias_multiplies_by_a_smooth_field_between_0_6_and_1_4(cases: dict[str, HeadCase]) -> None:
    base, biased = cases["as-is"].image.array, cases["bias +-40%"].image.array
    gain = biased / np.maximum(base, 1e-12)
    assert gain.min() >= 0.6 - 1e-4 and gain.max() <= 1.4 + 1e-4 and np.ptp(gain) > 0.6
    assert np.abs(np.diff(gain, axis=2)).max() < 0.05  # smooth: a few percent per voxel at most


def test_rician_variants_add_noise_in_order(cases: dict[str, HeadCase]) -> None:
    def noise(case: HeadCase) -> float:
        return float((case.image.array - cases["as-is"].image.array)[case.tissue.array == WM].std())

    assert noise(cases["Rician SNR 5"]) > 1.7 * noise(cases["Rician SNR 10"]) > 0
    assert cases["Rician SNR 5"].params["base_snr"] == cases["as-is"].params["snr"]
    assert 20.0 <= cases["as-is"].params["snr"] <= 40.0  # type: ignore[operator]


def test_gamma_variants_bend_the_intensities_and_keep_their_range(cases: dict[str, HeadCase]) -> None:
    base, low, high = (cases[v].image.array for v in ("as-is", "gamma 0.5", "gamma 2"))
    assert (low >= base - 1e-5).all() and (high <= base + 1e-5).all()
    assert low.max() == pytest.approx(base.max(), rel=1e-5) and high.max() == pytest.approx(base.max(), rel=1e-5)
    assert tissue_mean(cases["gamma 2"], GM) < tissue_mean(cases["as-is"], GM) < tissue_mean(cases["gamma 0.5"], GM)


def test_noise_and_empty_hold_no_head(cases: dict[str, HeadCase]) -> None:
    base, noise, empty = cases["as-is"], cases["noise"], cases["empty"]
    for case in (noise, empty):
        assert case.image.shape == base.image.shape and np.array_equal(case.image.affine, base.image.affine)
        assert np.array_equal(case.tissue.array, base.tissue.array)  # flagged cases keep the base references
        image = case.image.array  # Rayleigh: mean / std = sqrt(pi / (4 - pi)), the same in brain and in air
        assert image.mean() / image.std() == pytest.approx(np.sqrt(np.pi / (4 - np.pi)), rel=0.05)
        assert image[case.tissue.array > 0].mean() == pytest.approx(image[case.tissue.array == 0].mean(), rel=0.05)
    air = base.image.array[:2]  # the canvas' side margins: air (a faint signal of its own) and the base head's noise floor
    assert 0.5 * air.mean() < empty.image.array.mean() <= air.mean()
    assert noise.image.array.mean() > 0.5 * base.image.array[base.tissue.array > 0].mean()


# --- unit transforms ------------------------------------------------------------------------------------


def test_rician_reaches_the_asked_snr_on_a_uniform_head() -> None:
    labels = LabelMap(np.pad(np.full((30, 30, 30), WM, np.uint8), 5), np.eye(4))
    image = Image((labels.array > 0).astype(np.float32) * 100, labels.affine)
    noisy = ht.rician(image, labels, 10.0, 1e6, np.random.default_rng(0))
    assert noisy.array[labels.array > 0].std() == pytest.approx(10.0, rel=0.05)
    with pytest.raises(ValueError, match="Expected snr below"):
        ht.rician(image, labels, 30.0, 20.0, np.random.default_rng(0))


def test_transforms_refuse_grids_that_are_not_ras() -> None:
    labels = LabelMap(np.ones((4, 4, 4), np.uint8), np.diag([-1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="Expected a RAS"):
        ht.cropped_top(Image(np.ones((4, 4, 4), np.float32), labels.affine), labels, 1.0)


# --- seeds, laziness, arguments, files -------------------------------------------------------------------


def test_template_brain_images_the_brain_with_its_own_intensities_and_keeps_the_head(cases: dict[str, HeadCase]) -> None:
    base, template = cases["as-is"], cases[TEMPLATE_BRAIN]
    assert np.array_equal(template.tissue.array, base.tissue.array) and np.array_equal(template.image.affine, base.image.affine)
    inside = base.brain_mask.array > 0
    assert np.array_equal(template.image.array[~inside], base.image.array[~inside])
    white = base.tissue.array == WM
    assert np.median(template.image.array[white]) == pytest.approx(np.median(base.image.array[white]), rel=0.05)
    own = hv._placed(tiny_brain_image(tiny_brain()), LabelMap(base.tissue.array, base.tissue.affine))  # the template on the head's grid
    assert np.corrcoef(template.image.array[inside], own[inside])[0, 1] > 0.8
    assert not template.expect_flagged and template.params["white_matter_scale"] > 0


def test_template_brain_needs_the_brains_own_image_on_its_grid() -> None:
    brain = tiny_brain()
    with pytest.raises(ValueError, match="Expected brain_image .*Received: none"):
        brain_cases(brain, subject_id="tiny", variants=[TEMPLATE_BRAIN])
    shifted = Image(tiny_brain_image(brain).array[1:], brain.affine)
    with pytest.raises(ValueError, match="on the brain's grid"):
        brain_cases(brain, subject_id="tiny", variants=[TEMPLATE_BRAIN], brain_image=shifted)
    assert next(brain_cases(brain, subject_id="tiny", variants=["as-is"])).variant == "as-is"  # other variants need no image


def test_a_seed_gives_the_same_cases_whatever_other_variants_are_asked_for(cases: dict[str, HeadCase]) -> None:
    chosen = ("Rician SNR 10", "child 0.8x", "rotated 20deg")
    again = list(brain_cases(tiny_brain(), subject_id="tiny", variants=chosen))
    assert [case.variant for case in again] == list(chosen)
    for case in again:
        assert np.array_equal(case.image.array, cases[case.variant].image.array) and case.params == cases[case.variant].params
        assert np.array_equal(case.tissue.array, cases[case.variant].tissue.array)
    other = next(brain_cases(tiny_brain(), subject_id="tiny", seed=1, variants=["as-is"]))
    assert not np.array_equal(other.image.array, cases["as-is"].image.array)
    assert next(brain_cases(tiny_brain(), subject_id="tiny", index=1, variants=["as-is"])).params != cases["as-is"].params


def test_head_cases_is_lazy_and_cycles_through_the_test_brains(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    brains = [HeldOutBrain("a", tiny_brain(), None), HeldOutBrain("b", tiny_brain((20.0, 24.0, 18.0)), None)]
    monkeypatch.setattr(hv, "held_out_brains", lambda config: calls.append(config) or brains)
    stream = head_cases(Config(), 3, seed=5, variants=("as-is", "empty"))
    assert calls == []  # nothing built before the first case is asked for
    first = next(stream)
    assert first.name == "head00-a-as-is" and first.subject_id == "a" and len(calls) == 1
    rest = list(stream)
    assert [case.name for case in rest] == ["head00-a-empty", "head01-b-as-is", "head01-b-empty", "head02-a-as-is", "head02-a-empty"]
    assert not np.array_equal(rest[3].image.array, first.image.array)  # head 2 grows around brain "a" again, from its own seed


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"n_heads": 0}, ValueError, "n_heads=0"),
        ({"n_heads": -2}, ValueError, "n_heads=-2"),
        ({"n_heads": 1.5}, ValueError, "n_heads=1.5"),
        ({"n_heads": True}, ValueError, "n_heads=True"),
        ({"seed": -1}, ValueError, "seed=-1"),
        ({"seed": 0.5}, ValueError, "seed=0.5"),
        ({"variants": "as-is"}, ValueError, "variants='as-is'"),
        ({"variants": []}, ValueError, "variants=[]"),
        ({"variants": ["as-is", "bogus"]}, ValueError, "unknown ['bogus']"),
        ({"variants": ["noise", "noise"]}, ValueError, "variants=['noise', 'noise']"),
        ({"config": None}, TypeError, "NoneType"),
    ],
)
def test_bad_arguments_raise_at_the_call(monkeypatch: pytest.MonkeyPatch, arguments: dict, error: type, named: str) -> None:
    monkeypatch.setattr(hv, "held_out_brains", lambda config: pytest.fail("built brains for bad arguments"))
    call = {"config": Config(), "n_heads": 1, **arguments}
    with pytest.raises(error, match="Expected") as raised:
        head_cases(call.pop("config"), call.pop("n_heads"), **call)
    assert "Received" in str(raised.value) and named in str(raised.value)


def test_write_case_writes_three_volumes_that_load_back(cases: dict[str, HeadCase], tmp_path: Path) -> None:
    case = cases["1x1x5 coronal"]
    paths = write_case(case, tmp_path / "out")
    assert sorted(paths) == ["brain", "image", "tissue"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())  # no temporary left
    image, tissue, brain = load_image(paths["image"]), load_label_map(paths["tissue"]), load_label_map(paths["brain"])
    assert np.array_equal(image.array, case.image.array) and np.allclose(image.affine, case.image.affine)
    assert np.array_equal(tissue.array, case.tissue.array) and np.array_equal(brain.array, case.brain_mask.array)
    assert np.allclose(tissue.affine, case.image.affine) and np.allclose(brain.affine, case.image.affine)
    with pytest.raises(TypeError, match="Expected a HeadCase"):
        write_case(case.image, tmp_path)  # type: ignore[arg-type]


# --- the real data ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_test_brains_give_1_mm_heads_and_variants(tmp_path: Path) -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(tmp_path)})
    base, axial, crop = head_cases(config, 1, variants=("as-is", "1x1x5 axial", "cropped top"))
    held_out = hv.held_out_brains(config)
    assert base.subject_id in {brain.subject_id for brain in held_out}
    assert all(brain.image is not None and brain.image.shape == brain.brain.shape for brain in held_out)
    assert np.allclose(base.image.voxel_size, 1.0) and np.allclose(axial.image.voxel_size, (1.0, 1.0, 5.0))
    assert set(np.unique(base.tissue.array)) == {0, CSF, GM, WM} and 800 < brain_ml(base) < 3000
    assert not any(case.expect_flagged for case in (base, axial, crop))
    assert crop.brain_mask.array.sum() < base.brain_mask.array.sum()
    assert tissue_mean(base, WM) > tissue_mean(base, GM) > tissue_mean(base, CSF)


def test_the_child_zero_air_variant_is_a_small_head_on_exact_zeros(cases: dict[str, HeadCase]) -> None:
    case, child = cases["child zero air"], cases["child 0.65x"]
    image = case.image.array
    assert np.mean(image == 0.0) > 0.3 and np.count_nonzero(child.image.array == 0.0) < np.count_nonzero(image == 0.0)
    assert image[case.brain_mask.array > 0].min() > 0.0  # only the air around the head is zeroed
    assert 0.8 * brain_ml(child) < brain_ml(case) < 1.25 * brain_ml(child) and not case.expect_flagged
