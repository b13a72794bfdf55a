"""Seconds, peak memory and achieved vs possible FLOP/s to segment one MNI152-sized T1, per family.

Run: ``make bench-inference`` (or ``.venv/bin/python benchmarks/segment_volume.py [--quick] [--repeats N]
[--batch-size B] [--workers W] [--threads T] [--onednn on|off] [--json PATH]``). The image is the 1 mm MNI152 T1
packaged with nilearn (197x233x189), written once to a temporary NIfTI file. Each bundle runs in its
own fresh ("spawn") process, so the peak RSS printed is that family's alone. In that process: a
float32 matmul probe, the bundle load, one warm-up segmentation, then ``--repeats`` timed in-memory
``Segmenter.segment`` calls, each followed by one end-to-end run (read the NIfTI file, segment,
write the label map and volumes table; no QC picture), then the matmul probe again. Figures are
medians. Segmentations are what ``python -m inference`` and the plugins run by default: labels,
without probability maps or postprocessing (on this 1 mm template, labels taken on the conformed
grid, see `inference.segmenter`).

FLOPs per volume come from `inference.predict.plan_prediction` (the stacks `predict_volume` and
`predict_label_volume` run, zero stacks of the last batch included, and separately the useful ones) times
`brainseg_tf.models.count_flops` of each network at the padded stack shape; the benchmark checks
that the plan is what ran. Achieved GFLOP/s is FLOPs run / seconds, over the whole segmentation and
over the network calls alone; the ratio achieved / possible compares it with the best matmul
GFLOP/s of the run (same processes, same TensorFlow settings; other work on a shared machine only
lowers a probe, so the best is the fairest ceiling). CPU seconds (all threads of the process) and
the load other processes put on the machine during the timed runs tell a quiet run from a
disturbed one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import logging
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"multi-class": ROOT / "models" / "tissue-multiclass", "ensemble": ROOT / "models" / "tissue-ensemble"}
TARGET_SECONDS = {"multi-class": 10.0, "ensemble": 20.0}
TARGET_PEAK_RSS_GB = 2.5
TARGET_RATIO = 0.5
DISTURBED_CORES = 0.1
"""Other processes' load (cores) above which the figures are flagged as disturbed."""
MATMUL_SIZES = (1024, 2048, 3072)
QUICK_MATMUL_SIZES = (512,)
QUICK_SHAPE = (64, 64, 40)
"""--quick: a centred crop of the template (a smoke run, not the target setting)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every measuring process is told (from the command line)."""

    repeats: int
    batch_size: int
    threads: int | None
    workers: int
    onednn: str
    quick: bool


class TimedPredict:
    """A predict function that records when each of its calls ran and the batch shapes it was given.

    Calls may overlap (`Segmenter` keeps several in flight): `seconds` is the wall time during
    which at least one call ran, not the sum of the calls. `also` records another function of the
    same network (its labels function) in the same lists.
    """

    def __init__(self, predict: Any) -> None:
        self.predict = predict
        self.intervals: list[tuple[float, float]] = []
        self.shapes: list[tuple[int, ...]] = []
        self._timed_predict = self.also(predict)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._timed_predict(batch)

    def also(self, function: Any) -> Any:
        """``function`` (e.g. the network's labels function, or None) recording its calls here too."""
        if function is None:
            return None

        def timed(batch: np.ndarray) -> np.ndarray:
            started = time.perf_counter()
            result = function(batch)
            self.intervals.append((started, time.perf_counter()))  # list.append is atomic: safe from several threads
            self.shapes.append(tuple(batch.shape))
            return result

        return timed

    @property
    def seconds(self) -> float:
        return busy_seconds(self.intervals)

    def reset(self) -> None:
        self.intervals, self.shapes = [], []


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: the time during which any of them ran."""
    total, covered_to = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > covered_to:
            total += end - max(start, covered_to)
            covered_to = end
    return total


def matmul_gflops(sizes: tuple[int, ...], seconds: float = 0.6, trials: int = 3) -> dict[int, float]:
    """Best float32 ``tf.linalg.matmul`` GFLOP/s (2 n^3 per product) per square size, after warm-up."""
    import tensorflow as tf

    product = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    rates = {}
    for n in sizes:
        a, b = tf.random.normal((n, n), seed=1), tf.random.normal((n, n), seed=2)
        product(a, b), product(a, b)
        best = 0.0
        for _ in range(trials):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                product(a, b).numpy()  # .numpy() waits for the result
                count += 1
            best = max(best, count * 2 * n**3 / (time.perf_counter() - started) / 1e9)
        rates[n] = best
    return rates


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def others_load(before: tuple[int, int] | None, after: tuple[int, int] | None, own_cpu_seconds: float) -> float | None:
    """Cores' worth of CPU that other processes used between two `cpu_jiffies` readings."""
    if before is None or after is None or after[1] == before[1]:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    wall = (after[1] - before[1]) / tick / (os.cpu_count() or 1)
    return max(0.0, ((after[0] - before[0]) / tick - own_cpu_seconds) / wall)


def measure_family(name: str, bundle: str, image_path: str, settings: Settings) -> dict[str, Any]:
    """Everything measured in one fresh process for one bundle (run through a spawn pool)."""
    _start_tensorflow(settings)
    from brainseg_tf.io import load_image

    sizes = QUICK_MATMUL_SIZES if settings.quick else MATMUL_SIZES
    matmul_before = matmul_gflops(sizes)
    started = time.perf_counter()
    segmenter, timers = _instrumented_segmenter(bundle, settings.batch_size, settings.workers)
    load_seconds = time.perf_counter() - started
    rss_after_load = _peak_rss_bytes()
    image = load_image(image_path)
    plans = _plans(segmenter, image)
    warm_up = segmenter.segment(image).seconds
    _check_plans(timers, plans)
    runs = _timed_runs(segmenter, timers, image, image_path, settings.repeats)
    matmul_after = matmul_gflops(sizes)
    return {
        "family": name,
        "bundle": str(bundle),
        "network_paths": [str(t.predict.path) for t in timers],
        "image_shape": list(image.shape),
        "plans": [_plan_dict(p) for p in plans],
        "matmul_gflops": {str(n): max(matmul_before[n], matmul_after[n]) for n in sizes},
        "matmul_gflops_before": {str(n): r for n, r in matmul_before.items()},
        "matmul_gflops_after": {str(n): r for n, r in matmul_after.items()},
        "load_seconds": load_seconds,
        "warm_up_seconds": warm_up,
        **runs,
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_bytes": _peak_rss_bytes(),
        **_thread_settings(),
    }


def _start_tensorflow(settings: Settings) -> None:
    """oneDNN and thread settings, before TensorFlow runs anything (both are read once)."""
    from brainseg_tf.runtime import configure_threads, prefer_onednn

    if settings.onednn == "default":
        prefer_onednn()  # what `python -m inference` and the plugins do
    else:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if settings.onednn == "on" else "0"

    configure_threads(settings.threads)


def _instrumented_segmenter(bundle: str, batch_size: int, workers: int) -> tuple[Any, list[TimedPredict]]:
    """The bundle's `Segmenter`, each network's predict (and labels) function wrapped in a `TimedPredict`."""
    from brainseg_tf.config import InferenceConfig
    from inference.inferers import SliceInferer
    from inference.segmenter import Segmenter

    segmenter = Segmenter.from_bundle(bundle, InferenceConfig(batch_size=batch_size, workers=workers))
    networks = segmenter.head.networks
    if not all(isinstance(n.inferer, SliceInferer) for n in networks):
        raise ValueError(f"Expected a bundle of 2.5D slice networks (the FLOP count follows plan_prediction). Received: {bundle}")
    timers = [TimedPredict(n.predict) for n in networks]
    timed = tuple(dataclasses.replace(n, predict=t, predict_labels=t.also(n.predict_labels)) for n, t in zip(networks, timers))
    segmenter.head = dataclasses.replace(segmenter.head, networks=timed)
    return segmenter, timers


def _plans(segmenter: Any, image: Any) -> list[Any]:
    """Each network's `PredictionPlan` for the image, prepared by the bundle's input contract as `Segmenter.segment` does."""
    prepared = segmenter.input_spec.prepare(image)
    return [n.inferer.plan(prepared.array) for n in segmenter.head.networks]


def _check_plans(timers: list[TimedPredict], plans: list[Any]) -> None:
    """The batches each network was given are the planned ones, or the FLOP figures would be wrong."""
    for timer, plan in zip(timers, plans):
        expected = [(plan.batch_size, *plan.stack_shape)] * plan.batches
        if sorted(timer.shapes) != expected:  # concurrent calls finish in any order
            raise RuntimeError(
                f"plan_prediction disagrees with predict_volume: planned {expected[:1]} x {len(expected)}, ran {timer.shapes[:1]} x {len(timer.shapes)}"
            )


def _timed_runs(segmenter: Any, timers: list[TimedPredict], image: Any, image_path: str, repeats: int) -> dict[str, Any]:
    """Per repeat: one in-memory segmentation (wall, network and CPU seconds), then one end-to-end run."""
    from inference.outputs import OutputOptions, output_paths, write_outputs

    runs: dict[str, Any] = {"segment_seconds": [], "network_seconds": [], "segment_cpu_seconds": [], "end_to_end_seconds": []}
    own_before, machine_before = _own_cpu_seconds(), cpu_jiffies()
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as output_dir:
        paths = output_paths(image_path, output_dir, OutputOptions(qc=False))
        for _ in range(repeats):
            for timer in timers:
                timer.reset()
            cpu = time.process_time()
            runs["segment_seconds"].append(segmenter.segment(image).seconds)
            runs["segment_cpu_seconds"].append(time.process_time() - cpu)
            runs["network_seconds"].append(sum(t.seconds for t in timers))
            started = time.perf_counter()
            loaded, segmentation = segmenter.segment_file(image_path)
            write_outputs(loaded, segmentation, paths, {"family": segmenter.family})
            runs["end_to_end_seconds"].append(time.perf_counter() - started)
    runs["others_load_cores"] = others_load(machine_before, cpu_jiffies(), _own_cpu_seconds() - own_before)
    return runs


def _thread_settings() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _plan_dict(plan: Any) -> dict[str, Any]:
    return {
        "box": [[s.start, s.stop] for s in plan.box] if plan.box else None,
        "slices": plan.slices,
        "stack_shape": list(plan.stack_shape),
        "batch_size": plan.batch_size,
        "batches": plan.batches,
        "stacks_run": plan.stacks_run,
    }


def add_flops(result: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per volume, run and useful, from a family's plans and its networks' `count_flops`."""
    from brainseg_tf.bundle import load_keras_model
    from brainseg_tf.models import count_flops

    run = useful = 0
    for path, plan in zip(result["network_paths"], result["plans"]):
        per_stack = count_flops(load_keras_model(path), tuple(plan["stack_shape"]))
        run += per_stack * plan["stacks_run"]
        useful += per_stack * plan["slices"]
    return {**result, "gflop_run": run / 1e9, "gflop_useful": useful / 1e9}


def add_ratios(result: dict[str, Any], possible: float) -> dict[str, Any]:
    """Achieved GFLOP/s (FLOPs run / median seconds) and its ratio to ``possible`` GFLOP/s."""
    segment = statistics.median(result["segment_seconds"])
    network = statistics.median(result["network_seconds"])
    return {
        **result,
        "possible_gflops": possible,
        "achieved_gflops_segment": result["gflop_run"] / segment,
        "achieved_gflops_network": result["gflop_run"] / network,
        "ratio_segment": result["gflop_run"] / segment / possible,
        "ratio_network": result["gflop_run"] / network / possible,
    }


def run_family(name: str, image_path: Path, settings: Settings) -> dict[str, Any]:
    """`measure_family` in a fresh spawned process, then its FLOPs per volume."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(measure_family, name, str(BUNDLES[name]), str(image_path), settings)
        return add_flops(job.result())


def write_template(path: Path, quick: bool) -> tuple[int, ...]:
    """The 1 mm MNI152 T1 from nilearn as float32 NIfTI (a centred crop with ``quick``); returns its shape."""
    from nilearn.datasets import load_mni152_template

    from brainseg_tf.io import Volume, save_volume

    template = load_mni152_template(resolution=1)
    array, affine = np.asarray(template.get_fdata(), np.float32), template.affine
    if quick:
        starts = [(size - crop) // 2 for size, crop in zip(array.shape, QUICK_SHAPE)]
        array = array[tuple(slice(s, s + c) for s, c in zip(starts, QUICK_SHAPE))]
        affine = affine.copy()
        affine[:3, 3] += affine[:3, :3] @ np.array(starts, float)
    save_volume(Volume(array, affine), path, "image")
    return array.shape


def table(results: list[dict[str, Any]], quick: bool) -> str:
    """The figures as a markdown table: one column per family, targets judged in the cells (not with ``quick``)."""

    def judged(value: float, target: float, text: str, at_most: bool = True) -> str:
        if quick:
            return text
        ok = value <= target if at_most else value >= target
        shown = f"{target:g}" if at_most else f"{target:.0%}"
        return f"{text} ({'≤' if at_most else '≥'} {shown}: {'PASS' if ok else 'MISS'})"

    def median(r: dict[str, Any], key: str) -> float:
        return statistics.median(r[key])

    first_plans = [r["plans"][0] for r in results]
    rows: list[tuple[str, list[str]]] = [
        ("networks", [str(len(r["plans"])) for r in results]),
        ("network calls per network", [f"{p['batches']} x {p['batch_size']} stacks of {'x'.join(map(str, p['stack_shape']))}" for p in first_plans]),
        ("stacks per network: useful / run", [f"{p['slices']} / {p['stacks_run']}" for p in first_plans]),
        ("GFLOP per volume: useful / run", [f"{r['gflop_useful']:.1f} / {r['gflop_run']:.1f}" for r in results]),
        ("bundle load (s)", [f"{r['load_seconds']:.2f}" for r in results]),
        ("first segmentation, warm-up (s)", [f"{r['warm_up_seconds']:.2f}" for r in results]),
        ("**segment one volume (s)**", [judged(s, TARGET_SECONDS[r["family"]], f"**{s:.2f}**") for r, s in ((r, median(r, "segment_seconds")) for r in results)]),
        ("of which a network call is running (s)", [f"{median(r, 'network_seconds'):.2f}" for r in results]),
        ("CPU seconds of the segmentation, all threads", [f"{median(r, 'segment_cpu_seconds'):.2f}" for r in results]),
        ("end to end: read + segment + write (s)", [f"{median(r, 'end_to_end_seconds'):.2f}" for r in results]),
        ("RSS after bundle load (GB)", [f"{r['rss_after_load_bytes'] / 1e9:.2f}" for r in results]),
        ("**peak RSS (GB)**", [judged(r["peak_rss_bytes"] / 1e9, TARGET_PEAK_RSS_GB, f"**{r['peak_rss_bytes'] / 1e9:.2f}**") for r in results]),
        ("matmul float32 GFLOP/s before / after, n = " + ", ".join(results[0]["matmul_gflops"]), [_probes(r) for r in results]),
        ("possible GFLOP/s (best matmul of the run)", [f"{r['possible_gflops']:.0f}" for r in results]),
        ("achieved GFLOP/s: segment / network calls", [f"{r['achieved_gflops_segment']:.1f} / {r['achieved_gflops_network']:.1f}" for r in results]),
        ("**achieved / possible, segment**", [judged(r["ratio_segment"], TARGET_RATIO, f"**{r['ratio_segment']:.0%}**", at_most=False) for r in results]),
        ("achieved / possible, network calls", [f"{r['ratio_network']:.0%}" for r in results]),
        ("other processes' load during the timed runs (cores)", [_load(r["others_load_cores"]) for r in results]),
    ]
    lines = ["| figure | " + " | ".join(r["family"] for r in results) + " |", "| --- |" + " --- |" * len(results)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def _probes(result: dict[str, Any]) -> str:
    return " / ".join(", ".join(f"{v:.0f}" for v in result[key].values()) for key in ("matmul_gflops_before", "matmul_gflops_after"))


def _load(cores: float | None) -> str:
    if cores is None:
        return "n/a"
    return f"{cores:.2f}" + (" (disturbed: rerun on a quiet machine)" if cores > DISTURBED_CORES else "")


def environment(settings: Settings) -> dict[str, Any]:
    """Machine, versions and settings, for the report."""
    import tensorflow as tf

    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return {
        **dataclasses.asdict(settings),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu})",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "TF_ENABLE_ONEDNN_OPTS": {"on": "1", "off": "0"}.get(settings.onednn, os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")),
        "threads": settings.threads or "TensorFlow default",
        "load_average_at_start": os.getloadavg(),
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def parse_settings(argv: list[str] | None = None) -> tuple[Settings, list[str], Path | None]:
    """Command line -> (settings, families, JSON path)."""
    from brainseg_tf.config import InferenceConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: a {'x'.join(map(str, QUICK_SHAPE))} crop, one repeat, targets not judged")
    parser.add_argument("--repeats", type=int, default=None, help="timed segmentations per family (default 3; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=InferenceConfig.batch_size, help="the most stacks per network call (inference.batch_size of the config)")
    parser.add_argument("--workers", type=int, default=InferenceConfig.workers, help="network calls in flight at once (inference.workers of the config)")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra-op threads (default: TensorFlow's, all cores)")
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default",
                        help="TF_ENABLE_ONEDNN_OPTS in the measuring processes (default: as python -m inference and the plugins "
                        "run, on unless the environment sets it)")
    parser.add_argument("--families", nargs="+", choices=sorted(BUNDLES), default=list(BUNDLES), help="which bundles to run")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1 or args.batch_size < 1 or args.workers < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"expected --repeats, --batch-size, --workers and --threads >= 1, received {repeats}, {args.batch_size}, "
                     f"{args.workers} and {args.threads}")
    return Settings(repeats, args.batch_size, args.threads, args.workers, args.onednn, args.quick), args.families, args.json


def main() -> None:
    settings, families, json_path = parse_settings()
    logging.basicConfig(level=logging.WARNING)
    info = environment(settings)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as folder:
        image_path = Path(folder) / "mni152_t1.nii.gz"
        shape = write_template(image_path, settings.quick)
        results = [run_family(name, image_path, settings) for name in families]
    possible = max(rate for r in results for rate in r["matmul_gflops"].values())  # the machine's best seen in this run
    results = [add_ratios(r, possible) for r in results]
    info["load_average_at_end"] = os.getloadavg()
    print(f"{info['date']}; machine: {info['machine']}, Python {info['python']}, TensorFlow {info['tensorflow']}, "
          f"TF_ENABLE_ONEDNN_OPTS {info['TF_ENABLE_ONEDNN_OPTS']}, threads: {info['threads']}, workers: {settings.workers}")
    print(f"image: MNI152 T1 from nilearn{' (quick: centred crop)' if settings.quick else ''}, {'x'.join(map(str, shape))} at 1 mm; "
          f"batch size {settings.batch_size}; median of {settings.repeats} timed run(s) after one warm-up; "
          f"load average {info['load_average_at_start'][0]:.2f} at start, {info['load_average_at_end'][0]:.2f} at end")
    print(table(results, settings.quick))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"environment": info, "results": results}, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {json_path}")


if __name__ == "__main__":
    main()
