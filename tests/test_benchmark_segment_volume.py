"""`plan_prediction` says exactly what `predict_volume` computes; the per-volume inference benchmark runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.predict import SliceSpec, plan_prediction, predict_volume

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_quick_benchmark_runs_both_families(tmp_path: Path) -> None:
    """A smoke run on a crop of the template: every figure is there and the FLOPs follow the plan."""
    output = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "segment_volume.py"), "--quick", "--json", str(output)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "achieved / possible" in completed.stdout
    results = {r["family"]: r for r in json.loads(output.read_text())["results"]}
    assert sorted(results) == ["ensemble", "multi-class"]
    assert len(results["ensemble"]["network_paths"]) == 3 and len(results["multi-class"]["network_paths"]) == 1
    for result in results.values():
        assert result["peak_rss_bytes"] > 0 and result["possible_gflops"] > 0 and result["segment_seconds"][0] > 0
        assert 0 < result["network_seconds"][0] < result["segment_seconds"][0]  # the calls were timed, labels function included
        assert 0 < result["gflop_useful"] <= result["gflop_run"]
    assert results["ensemble"]["gflop_run"] == pytest.approx(3 * results["multi-class"]["gflop_run"], rel=0.01)


def test_network_seconds_count_overlapping_calls_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("segment_volume", ROOT / "benchmarks" / "segment_volume.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.busy_seconds([]) == 0.0
    assert module.busy_seconds([(3.0, 4.0), (0.0, 1.0), (0.5, 2.0)]) == pytest.approx(3.0)
    assert module.busy_seconds([(0.0, 5.0), (1.0, 2.0), (4.0, 6.0)]) == pytest.approx(6.0)
