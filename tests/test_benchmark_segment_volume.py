"""`plan_prediction` says exactly what `predict_volume` computes; the per-volume inference benchmark measures the
whole pipeline (brain extraction and QC included) and counts each network on the array it was given."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from brainseg_tf.config import InferenceConfig, QcConfig
from brainseg_tf.io import Image, Volume, load_image, save_volume
from brainseg_tf.labels import TISSUE
from brainseg_tf.preprocessing import InputSpec, Preprocessing, SliceReader
from inference.extraction import BrainExtractor
from inference.heads import Network, SoftmaxHead
from inference.inferers import PatchInferer, SliceInferer
from inference.patches import PatchSpec
from inference.predict import SliceSpec, plan_prediction, predict_volume
from inference.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/segment_volume.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("segment_volume", ROOT / "benchmarks" / "segment_volume.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _counting_network(channels: int):
    """A stand-in predict function that records the shape of every batch it is given."""
    shapes: list[tuple[int, ...]] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return np.zeros((*batch.shape[:3], channels), np.float32)

    return predict, shapes


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 16])
def test_plan_matches_the_batches_predict_volume_runs(slice_axis: int, batch_size: int) -> None:
    image = np.zeros((20, 26, 18), np.float32)
    image[5:14, 7:21, 4:13] = 0.9  # content box 9 x 14 x 9, grown by the margin of 2
    spec = SliceSpec(slice_axis=slice_axis, context=1, pad_multiple=8, output_channels=2, margin=2)
    plan = plan_prediction(image, spec, batch_size)
    predict, shapes = _counting_network(2)
    predict_volume(image, predict, spec, batch_size)
    assert plan.box == (slice(3, 16), slice(5, 23), slice(2, 15))
    expected_sizes = [13, 18, 13]
    assert plan.slices == expected_sizes[slice_axis]
    assert plan.in_plane_shape == tuple(s for axis, s in enumerate(expected_sizes) if axis != slice_axis)
    assert all(size % 8 == 0 for size in plan.stack_shape[:2]) and plan.stack_shape[2] == 3
    assert plan.batches == -(-plan.slices // batch_size) and plan.batch_size <= batch_size
    assert plan.slices <= plan.stacks_run < plan.slices + plan.batches  # zero stacks: fewer than one per batch
    assert shapes == [(plan.batch_size, *plan.stack_shape)] * plan.batches


def test_plan_of_an_empty_image_runs_nothing() -> None:
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=3)
    plan = plan_prediction(np.zeros((8, 8, 8), np.float32), spec, batch_size=4)
    predict, shapes = _counting_network(3)
    predict_volume(np.zeros((8, 8, 8), np.float32), predict, spec, batch_size=4)
    assert plan.box is None and plan.slices == 0 and plan.batches == 0 and plan.stacks_run == 0 and shapes == []


@pytest.mark.parametrize(
    ("image", "batch_size", "message"),
    [
        (np.zeros((4, 4)), 4, "3D conformed image"),
        (np.zeros((4, 4, 4)), 0, "batch_size"),
        (np.zeros((4, 4, 4)), 2.0, "batch_size"),
        (np.zeros((4, 4, 4)), True, "batch_size"),
    ],
)
def test_plan_refuses_bad_arguments(image: np.ndarray, batch_size, message: str) -> None:
    spec = SliceSpec(slice_axis=2, context=1, pad_multiple=4, output_channels=1)
    with pytest.raises(ValueError, match=message):
        plan_prediction(image, spec, batch_size)


def test_network_seconds_count_overlapping_calls_once(bench: ModuleType) -> None:
    assert bench.busy_seconds([]) == 0.0
    assert bench.busy_seconds([(3.0, 4.0), (0.0, 1.0), (0.5, 2.0)]) == pytest.approx(3.0)
    assert bench.busy_seconds([(0.0, 5.0), (1.0, 2.0), (4.0, 6.0)]) == pytest.approx(6.0)


# --- the pipeline with stand-in networks: a brain extractor first, the tissue head on the blanked image ---

SPEC_1MM = InputSpec(Preprocessing(1.0, 0.0, 100.0), SliceReader(2, 1), 8)
SMALL_HEADS = InferenceConfig(workers=1, qc=QcConfig(min_brain_ml=1.0, plausible_brain_ml=(2.0, 10.0)))  # a 3 mL "brain"


def _head(shape=(32, 32, 32)) -> np.ndarray:
    """A bright ball (the brain, radius 9) inside a dim head (radius 14) in faint noisy air: blanking the head
    shrinks the content box.

    The air is a scanner's, faint and never exactly one value, so the head is not taken for an input that
    arrived skull-stripped (`inference.extraction.stripped_brain`); the dim head stays above the background threshold.
    """
    radius = np.sqrt(((np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2) ** 2).sum(axis=0))
    air = np.random.default_rng(0).uniform(0.001, 0.01, shape).astype(np.float32)
    image = np.where(radius <= min(shape) / 2 - 2, 0.3, air).astype(np.float32)
    image[radius <= 9] = 1.0
    return image


def _bright_is_brain(batch: np.ndarray) -> np.ndarray:
    """Stand-in extractor network: the centre slice's normalised intensity above 0.5 is brain."""
    return (batch[..., batch.shape[-1] // 2] > 0.5).astype(np.float32)[..., None]


def _above_zero_is_white_matter(batch: np.ndarray) -> np.ndarray:
    """Stand-in tissue network: anything above 0.1 is white matter (class 3), else background."""
    return np.eye(4, dtype=np.float32)[np.where(batch[..., batch.shape[-1] // 2] > 0.1, 3, 0)]


def _segmenter(with_extractor: bool = True) -> Segmenter:
    inferer = SliceInferer(SliceSpec(2, 1, 8, 4, margin=2), batch_size=4, workers=1)
    head = SoftmaxHead((Network(_above_zero_is_white_matter, inferer, Path("tissue-stand-in")),), 1)
    extractor = BrainExtractor(
        tuple(Network(_bright_is_brain, SliceInferer(SliceSpec(axis, 1, 8, 1, margin=2), 4, 1), Path("extractor-stand-in")) for axis in (0, 1, 2)),
        SPEC_1MM, margin_mm=1.0,
    )
    return Segmenter(head, TISSUE, SPEC_1MM, SMALL_HEADS, extractor if with_extractor else None)


def test_the_tissue_plan_is_that_of_the_blanked_image_and_the_extractor_is_planned_apart(bench: ModuleType) -> None:
    image = Image(_head(), np.eye(4))
    segmenter, probes = bench.instrument(_segmenter())
    assert [p.role for p in probes] == ["tissue", "extractor", "extractor", "extractor"]
    warm_up = bench._warm_up(segmenter, probes, image)  # checks every plan against the batches that ran
    assert warm_up["brain_ml"] == pytest.approx((np.sqrt(((np.indices((32,) * 3) - 15.5) ** 2).sum(axis=0)) <= 9).sum() / 1000)
    assert warm_up["qc_status"] in ("pass", "warn")
    plans = bench._network_plans(probes)
    assert [p["slice_axis"] for p in plans["extractor_plans"]] == [0, 1, 2]
    assert plans["extractor_paths"] == ["extractor-stand-in"] * 3 and plans["network_paths"] == ["tissue-stand-in"]
    spec = segmenter.head.networks[0].inferer.inferer.spec
    whole_head = bench.plan_dict(plan_prediction(segmenter.input_spec.prepare(image).array, spec, 4))
    shown = segmenter.extractor.extract(image).shown.array > 0
    blanked = bench.plan_dict(plan_prediction(segmenter.input_spec.prepare(Image(np.where(shown, image.array, 0), image.affine)).array, spec, 4))
    assert plans["plans"] == [blanked]  # the tissue head is planned on what it saw: the brain (grown by 1 mm), not the head
    assert whole_head["box"] == [[0, 32]] * 3 and blanked["box"] != whole_head["box"] and blanked["slices"] < whole_head["slices"]


def test_a_bundle_without_extractor_has_only_tissue_probes(bench: ModuleType) -> None:
    segmenter, probes = bench.instrument(_segmenter(with_extractor=False))
    warm_up = bench._warm_up(segmenter, probes, Image(_head(), np.eye(4)))
    assert [p.role for p in probes] == ["tissue"] and warm_up["brain_ml"] is None
    assert bench._network_plans(probes)["extractor_plans"] == []
    assert bench._network_plans(probes)["plans"][0]["box"] == [[0, 32]] * 3  # the whole head (radius 14 + margin 2): nothing blanked


def test_check_plans_refuses_what_the_plan_did_not_foresee(bench: ModuleType) -> None:
    segmenter, probes = bench.instrument(_segmenter())
    bench._warm_up(segmenter, probes, Image(_head(), np.eye(4)))
    probes[1].timer.shapes.append((1, 8, 8, 3))
    with pytest.raises(RuntimeError, match="plan_prediction disagrees with what extractor-stand-in ran"):
        bench.check_plans(probes)
    probes[0].inferer.plans.clear()
    with pytest.raises(RuntimeError, match="expected one array per tissue network"):
        bench.check_plans(probes)


def test_networks_that_are_not_slice_networks_are_refused(bench: ModuleType) -> None:
    segmenter = _segmenter()
    patch = PatchInferer(PatchSpec((8, 8, 8), 8, output_channels=1), batch_size=1)
    segmenter.extractor.networks = (Network(_bright_is_brain, patch, Path("patchy")),)
    with pytest.raises(ValueError, match=r"Expected extractor networks that read 2.5D slices.*patchy"):
        bench.instrument(segmenter)


def test_timed_runs_time_the_extraction_and_the_qc_apart(bench: ModuleType, tmp_path: Path) -> None:
    path = save_volume(Volume(_head(), np.eye(4)), tmp_path / "head.nii.gz", "image")
    segmenter, probes = bench.instrument(_segmenter())
    image = load_image(path)
    bench._warm_up(segmenter, probes, image)
    runs = bench._timed_runs(segmenter, probes, image, str(path), repeats=2)
    for key in ("segment_seconds", "network_seconds", "extractor_network_seconds", "qc_seconds", "extraction_seconds",
                "extraction_network_seconds", "end_to_end_seconds"):
        assert len(runs[key]) == 2 and all(s > 0 for s in runs[key]), key
    assert all(n <= e for n, e in zip(runs["extraction_network_seconds"], runs["extraction_seconds"]))
    plain, plain_probes = bench.instrument(_segmenter(with_extractor=False))
    runs = bench._timed_runs(plain, plain_probes, image, str(path), repeats=1)
    assert runs["extraction_seconds"] == [] and runs["extractor_network_seconds"] == [0.0] and runs["qc_seconds"][0] > 0


# --- real (tiny) bundles, with and without a brain extractor, measured in this process ---


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny multiclass tissue bundle, and the same with a brain extractor that calls the whole head brain."""
    import keras

    from brainseg_tf.bundle import write_model_bundle
    from brainseg_tf.config import Config
    from brainseg_tf.labels import BRAIN
    from brainseg_tf.models import build_segmenter

    keras.utils.set_random_seed(0)
    config = Config().replace({"model.base_filters": 4, "model.depth": 2})
    root = tmp_path_factory.mktemp("bench-bundles")
    brain = build_segmenter("single_class", (None, None, 3), BRAIN.num_classes, config.model)
    head = brain.get_layer("head_conv")
    head.set_weights([np.zeros_like(head.get_weights()[0]), np.full_like(head.get_weights()[1], 10.0)])  # sigmoid(10): brain
    extractor_config = config.replace({"preprocess.voxel_size": 2.0, "generator.slice_axis": 1})
    extractor = write_model_bundle(root / "brain", brain, family="single_class", label_set=BRAIN, config=extractor_config, metrics={}, class_index=1)
    tissue = build_segmenter("multiclass", (None, None, 3), TISSUE.num_classes, config.model)
    common = {"family": "multiclass", "label_set": TISSUE, "config": config, "metrics": {}}
    return {
        "plain": write_model_bundle(root / "plain", tissue, **common),
        "with_extractor": write_model_bundle(root / "with-extractor", tissue, **common, brain_extractor=extractor),
    }


@pytest.mark.parametrize("kind", ["plain", "with_extractor"])
def test_measure_family_counts_and_times_a_bundle_with_or_without_extractor(
    bench: ModuleType, tiny_bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(bench, "_start_tensorflow", lambda settings: None)  # TensorFlow already runs in this process
    monkeypatch.setattr(bench, "matmul_gflops", lambda sizes: {n: 100.0 for n in sizes})
    path = save_volume(Volume(_head((24, 24, 24)) * 200.0, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "head.nii.gz", "image")
    settings = bench.Settings(repeats=1, batch_size=8, threads=None, workers=1, onednn="default", quick=True)
    result = bench.measure_family("multi-class", str(tiny_bundles[kind]), str(path), settings)
    result = bench.add_ratios({"image": "full-head", **bench.add_flops(result)}, possible=100.0)
    assert result["gflop_run_tissue"] > 0 and result["network_seconds"][0] > 0 and result["qc_seconds"][0] > 0
    assert result["gflop_run"] == pytest.approx(result["gflop_run_tissue"] + result["gflop_run_extractor"])
    if kind == "plain":
        assert result["extractor_plans"] == [] and result["gflop_run_extractor"] == 0 and result["extraction_seconds"] == []
    else:
        assert [Path(p).name for p in result["extractor_paths"]] == ["brain_extractor"] * len(InferenceConfig().extraction_axes)
        assert [p["slice_axis"] for p in result["extractor_plans"]] == list(InferenceConfig().extraction_axes)
        assert 0 < result["gflop_useful_extractor"] <= result["gflop_run_extractor"]
        assert result["extraction_seconds"][0] > 0 and result["brain_ml"] > 0
    text = bench.table([result], quick=False, peer_seconds=50.0)
    assert "| multi-class, full head |" in text and "(≤ 10: PASS; goal 5: met)" in text
    assert ("(≤ 0.2: PASS)" in text) == (kind == "with_extractor")  # a tiny network extracts far faster than 10 s
    summary = bench.extraction_summary([result], peer_seconds=50.0)
    assert ("/ fastest peer 50 s = 0.0" in summary[0] and summary[0].endswith("(target ≤ 0.2: PASS)")) == (kind == "with_extractor")


# --- images and the command line ---


def test_the_quick_full_head_is_the_suite_case_at_half_its_size(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluation.head_variants

    image = np.random.default_rng(0).random((9, 10, 11)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-4.0, -5.0, -6.0]
    case = SimpleNamespace(name="head00-stand-in-as-is", image=Image(image, affine))
    calls = []
    monkeypatch.setattr(evaluation.head_variants, "head_cases", lambda config, n, variants: calls.append((n, variants)) or iter([case]))
    shape, what = bench.write_image("full-head", tmp_path / "quick.nii.gz", quick=True)
    assert calls == [(1, ("as-is",))] and "head00-stand-in-as-is" in what
    written = load_image(tmp_path / "quick.nii.gz")
    assert shape == written.shape == (5, 5, 6) and np.allclose(written.affine, affine)  # every second voxel, still 1 mm
    assert np.array_equal(written.array, image[::2, ::2, ::2])
    shape, _ = bench.write_image("full-head", tmp_path / "whole.nii.gz", quick=False)
    assert shape == image.shape
    with pytest.raises(ValueError, match="Expected an image in"):
        bench.write_image("brain", tmp_path / "x.nii.gz", quick=False)


def test_an_image_the_segmenter_refuses_is_reported_not_timed(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    segmenter = _segmenter()
    segmenter.settings = InferenceConfig(workers=1)  # at least 100 mL of brain: the phantom's 3 mL is "no brain found"
    monkeypatch.setattr(bench, "_start_tensorflow", lambda settings: None)
    monkeypatch.setattr(bench, "matmul_gflops", lambda sizes: {n: 100.0 for n in sizes})
    monkeypatch.setattr(bench, "instrumented_segmenter", lambda bundle, settings: bench.instrument(segmenter))
    path = save_volume(Volume(_head(), np.eye(4)), tmp_path / "head.nii.gz", "image")
    settings = bench.Settings(repeats=1, batch_size=8, threads=None, workers=1, onednn="default", quick=False)
    result = bench.measure_family("ensemble", "stand-in", str(path), settings)
    assert result["refused"].startswith("no brain found (3 mL of brain") and "segment_seconds" not in result

    monkeypatch.setattr(bench, "write_image", lambda name, path, quick: ((32, 32, 32), "a phantom"))
    monkeypatch.setattr(bench, "run_family", lambda name, image, path, settings: {"image": image, **result, "family": name})
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--image", "mni152", "--families", "ensemble", "--json", str(tmp_path / "out.json")])
    assert exit_info.value.code == 1
    assert "REFUSED ensemble, MNI152: the segmenter refused the image, nothing measured (no brain found" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())["results"][0]["refused"] == result["refused"]


@pytest.mark.parametrize(
    ("argv", "images", "peer"),
    [([], ["full-head", "mni152"], None), (["--image", "full-head"], ["full-head"], None), (["--image", "mni152", "--peer-seconds", "6.5"], ["mni152"], 6.5)],
)
def test_options(bench: ModuleType, argv: list[str], images: list[str], peer: float | None) -> None:
    options = bench.parse_options(argv)
    assert options.images == images and options.peer_seconds == peer and options.families == ["multi-class", "ensemble"]


@pytest.mark.parametrize("argv", [["--peer-seconds", "0"], ["--peer-seconds", "-3"], ["--peer-seconds", "nan"], ["--image", "brain"], ["--repeats", "0"]])
def test_bad_options_are_refused(bench: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_options(argv)


@pytest.mark.slow
def test_quick_benchmark_runs_both_families_on_both_images(tmp_path: Path) -> None:
    """A smoke run on crops of the full head and the template: every figure is there and the FLOPs follow the plans."""
    output = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "segment_volume.py"), "--quick", "--peer-seconds", "6", "--json", str(output)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "achieved / possible" in completed.stdout and "brain extraction" in completed.stdout
    results = {(r["family"], r["image"]): r for r in json.loads(output.read_text())["results"]}
    assert sorted(results) == [(f, i) for f in ("ensemble", "multi-class") for i in ("full-head", "mni152")]
    for (family, image), result in results.items():
        assert len(result["network_paths"]) == (3 if family == "ensemble" else 1)
        # The committed bundles carry an extractor: its directions (inference.extraction_axes) run on both images; the MNI152 T1
        # arrives skull-stripped (exact zeros) and its directions disagree, so its brain is its own nonzero region.
        assert result["already_stripped"] == (image == "mni152") and len(result["extraction_seconds"]) == 1
        assert len(result["extractor_plans"]) == len(InferenceConfig().extraction_axes)
        assert result["peak_rss_bytes"] > 0 and result["possible_gflops"] > 0 and result["segment_seconds"][0] > 0
        assert 0 < result["network_seconds"][0] < result["segment_seconds"][0]  # the calls were timed, labels function included
        assert 0 < result["gflop_useful"] <= result["gflop_run"]
