"""Seconds, peak memory and achieved vs possible FLOP/s to segment one 1 mm head through the whole pipeline, per family.

Run: ``make bench-inference`` (or ``.venv/bin/python benchmarks/segment_volume.py [--quick]
[--image full-head|mni152|both] [--families ...] [--repeats N] [--batch-size B] [--workers W] [--threads T]
[--onednn on|off] [--peer-seconds S] [--json PATH]``). Images (default both), each written once to a
temporary NIfTI file:

- ``full-head``: a 1 mm synthetic full head (skull, scalp, face, neck), the first held-out case of the
  realistic-heads suite, as-is (`evaluation.head_variants.head_cases(Config(), 1, variants=("as-is",))`):
  the setting of the real-heads targets;
- ``mni152``: the skull-stripped 1 mm MNI152 T1 packaged with nilearn (197x233x189).

Each (bundle, image) pair runs in its own fresh ("spawn") process, so the peak RSS printed is that
pair's alone (Linux: VmHWM; ``ru_maxrss`` would count the parent's pages). In that process: a float32
matmul probe, the bundle load, one warm-up segmentation, then per repeat: one timed in-memory ``Segmenter.segment`` call (the whole pipeline: the brain
extraction when the bundle holds an extractor, the tissue networks on the image blanked outside the
brain, labels kept inside it, the QC verdict), the QC (`inference.qc.assess`) alone on its result,
the brain extraction (``segmenter.extractor.extract``) alone on the same image, and one end-to-end
run (read the NIfTI file, segment, write the label map and volumes table; no QC picture); then the
matmul probe again. Figures are medians of the repeats. Segmentations are what ``python -m inference``
and the plugins run by default: labels, without probability maps or postprocessing.

FLOPs per volume come from `inference.predict.plan_prediction` (the stacks `predict_volume` and
`predict_label_volume` run, zero stacks of the last batch included, and separately the useful ones)
of the array each network was actually given in the warm-up (tissue networks: the conformed image
blanked outside the brain's shown region; extractor: the whole image at its own voxel size, one plan
per slice direction), times `brainseg_tf.models.count_flops` of the network at the padded stack
shape; the benchmark checks that each plan is what ran. Tissue and extractor networks are counted
and timed apart. Achieved GFLOP/s is all FLOPs run / seconds, over the whole segmentation and over
the network calls alone; the ratio achieved / possible compares it with the best matmul GFLOP/s of
the run (same processes, same TensorFlow settings; other work on a shared machine only lowers a
probe, so the best is the fairest ceiling). CPU seconds (all threads of the process) and the load
other processes put on the machine during the timed runs tell a quiet run from a disturbed one.
``--peer-seconds S``: the fastest peer skull-stripper's seconds on a full head (measured elsewhere);
the brain extraction's seconds are then judged against a fifth of it. An image the segmenter refuses
(e.g. no brain found) is reported as such, and the command exits with status 1. ``--quick``: each
image at half its size (every second voxel, kept at 1 mm), one repeat, QC refusing nothing, no
target judged: a smoke run.
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
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"multi-class": ROOT / "models" / "tissue-multiclass", "ensemble": ROOT / "models" / "tissue-ensemble"}
IMAGES = {"full-head": "full head", "mni152": "MNI152"}
"""``--image`` choices and the names the table gives them."""
TARGET_SECONDS = {"multi-class": 10.0, "ensemble": 20.0}
GOAL_SECONDS = {"multi-class": 5.0, "ensemble": 10.0}
"""The real-heads issue's goals for the whole pipeline on a full head, below its targets."""
TARGET_PEAK_RSS_GB = 2.5
TARGET_RATIO = 0.5
TARGET_PEER_FRACTION = 0.2
"""Brain extraction at most this fraction of the fastest peer skull-stripper's seconds (full head)."""
DISTURBED_CORES = 0.1
"""Other processes' load (cores) above which the figures are flagged as disturbed."""
MATMUL_SIZES = (1024, 2048, 3072)
QUICK_MATMUL_SIZES = (512,)
QUICK_STEP = 2
"""--quick: every second voxel along each axis, kept at 1 mm (each head at half its size, an eighth of the voxels): a
smoke run, not the target setting. A crop is no head: a brain extractor finds no brain in one."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every measuring process is told (from the command line)."""

    repeats: int
    batch_size: int
    threads: int | None
    workers: int
    onednn: str
    quick: bool


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line: the measuring settings, what to measure, and how to report it."""

    settings: Settings
    families: list[str]
    images: list[str]
    json_path: Path | None
    peer_seconds: float | None


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


class PlannedInferer:
    """A `SliceInferer` that, while ``recording``, keeps the plan of every array it is given.

    So the plan is that of the array the network really saw (for the tissue networks of a bundle with
    a brain extractor: the image blanked outside the brain), not one rebuilt beside the pipeline.
    """

    def __init__(self, inferer: Any) -> None:
        self.inferer = inferer
        self.takes_labels = inferer.takes_labels
        self.recording = False
        self.plans: list[Any] = []

    def scores(self, image: np.ndarray, predict: Any) -> np.ndarray:
        self._record(image)
        return self.inferer.scores(image, predict)

    def labels(self, image: np.ndarray, predict_labels: Any) -> np.ndarray:
        self._record(image)
        return self.inferer.labels(image, predict_labels)

    def plan(self, image: np.ndarray) -> Any:
        return self.inferer.plan(image)

    def _record(self, image: np.ndarray) -> None:
        if self.recording:
            self.plans.append(self.inferer.plan(image))


@dataclasses.dataclass(frozen=True)
class Probe:
    """The instruments on one network: ``role`` "tissue" or "extractor", its bundle folder, its timer and plans."""

    role: str
    source: Path
    timer: TimedPredict
    inferer: PlannedInferer


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
    """Everything measured in one fresh process for one bundle and one image (run through a spawn pool)."""
    _start_tensorflow(settings)
    from brainseg_tf.errors import ImageError
    from brainseg_tf.io import load_image
    from brainseg_tf.runtime import peak_rss_bytes

    sizes = QUICK_MATMUL_SIZES if settings.quick else MATMUL_SIZES
    matmul_before = matmul_gflops(sizes)
    started = time.perf_counter()
    segmenter, probes = instrumented_segmenter(bundle, inference_settings(settings))
    load_seconds = time.perf_counter() - started
    rss_after_load = peak_rss_bytes()
    image = load_image(image_path)
    try:
        warm_up = _warm_up(segmenter, probes, image)
    except ImageError as error:  # e.g. no brain found: reported beside the figures, nothing to time
        return {"family": name, "bundle": str(bundle), "image_shape": list(image.shape), "refused": str(error), "load_seconds": load_seconds}
    runs = _timed_runs(segmenter, probes, image, image_path, settings.repeats)
    matmul_after = matmul_gflops(sizes)
    return {
        "family": name,
        "bundle": str(bundle),
        "image_shape": list(image.shape),
        **_network_plans(probes),
        "matmul_gflops": {str(n): max(matmul_before[n], matmul_after[n]) for n in sizes},
        "matmul_gflops_before": {str(n): r for n, r in matmul_before.items()},
        "matmul_gflops_after": {str(n): r for n, r in matmul_after.items()},
        "load_seconds": load_seconds,
        **warm_up,
        **runs,
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_bytes": peak_rss_bytes(),
        **_thread_settings(),
    }


def inference_settings(settings: Settings) -> Any:
    """The `InferenceConfig` the bundle is loaded with; with ``quick`` the QC refuses nothing (a half-size head holds little brain)."""
    from brainseg_tf.config import InferenceConfig, QcConfig

    qc = QcConfig(min_brain_ml=0.0) if settings.quick else QcConfig()
    return InferenceConfig(batch_size=settings.batch_size, workers=settings.workers, qc=qc)


def _start_tensorflow(settings: Settings) -> None:
    """oneDNN and thread settings, before TensorFlow runs anything (both are read once)."""
    from brainseg_tf.runtime import configure_threads, prefer_onednn

    if settings.onednn == "default":
        prefer_onednn()  # what `python -m inference` and the plugins do
    else:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if settings.onednn == "on" else "0"

    configure_threads(settings.threads)


def instrumented_segmenter(bundle: str, settings: Any) -> tuple[Any, list[Probe]]:
    """The bundle's `Segmenter` with a `Probe` on every network: the tissue head's, then the brain extractor's."""
    from inference.segmenter import Segmenter

    return instrument(Segmenter.from_bundle(bundle, settings))


def instrument(segmenter: Any) -> tuple[Any, list[Probe]]:
    """``segmenter`` with each network's predict (and labels) function timed and its inferer planned (in place).

    Raises:
        ValueError: a network that is not a 2.5D slice network (the FLOP count follows `plan_prediction`).
    """
    head_networks, probes = _probed(segmenter.head.networks, "tissue")
    segmenter.head = dataclasses.replace(segmenter.head, networks=head_networks)
    if segmenter.extractor is not None:
        extractor_networks, extractor_probes = _probed(segmenter.extractor.networks, "extractor")
        segmenter.extractor.networks = extractor_networks
        probes += extractor_probes
    return segmenter, probes


def _probed(networks: tuple[Any, ...], role: str) -> tuple[tuple[Any, ...], list[Probe]]:
    from inference.inferers import SliceInferer

    if not all(isinstance(n.inferer, SliceInferer) for n in networks):
        sources = sorted({str(n.source) for n in networks})
        raise ValueError(f"Expected {role} networks that read 2.5D slices (the FLOP count follows plan_prediction). Received: {sources}")
    probes = [Probe(role, Path(n.source), TimedPredict(n.predict), PlannedInferer(n.inferer)) for n in networks]
    probed = tuple(dataclasses.replace(n, predict=p.timer, predict_labels=p.timer.also(n.predict_labels), inferer=p.inferer)
                   for n, p in zip(networks, probes))
    return probed, probes


def _warm_up(segmenter: Any, probes: list[Probe], image: Any) -> dict[str, Any]:
    """One segmentation with every inferer recording its plan; the plans checked against the batches that ran."""
    for probe in probes:
        probe.inferer.recording = True
    segmentation = segmenter.segment(image)
    for probe in probes:
        probe.inferer.recording = False
    stripped = segmentation.brain is not None and segmentation.brain.already_stripped
    check_plans(probes)  # the extractor runs on a stripped input too: its directions tell a brain from a whole head
    qc = segmentation.qc
    return {
        "warm_up_seconds": segmentation.seconds,
        "already_stripped": stripped,
        "brain_ml": None if segmentation.brain is None else segmentation.brain.volume_ml,
        "qc_status": None if qc is None else qc.status,
        "qc_score": None if qc is None else qc.score,
        "qc_reasons": [] if qc is None else [r.code for r in qc.reasons],
    }


def check_plans(probes: list[Probe]) -> None:
    """Each network was given one array, in batches that are its plan's, or the FLOP figures would be wrong."""
    for probe in probes:
        if len(probe.inferer.plans) != 1:
            raise RuntimeError(f"expected one array per {probe.role} network in a segmentation, {probe.source} was given {len(probe.inferer.plans)}")
        plan = probe.inferer.plans[0]
        expected = [(plan.batch_size, *plan.stack_shape)] * plan.batches
        shapes = probe.timer.shapes
        if sorted(shapes) != expected:  # concurrent calls finish in any order
            raise RuntimeError(
                f"plan_prediction disagrees with what {probe.source} ran: planned {expected[:1]} x {len(expected)}, ran {shapes[:1]} x {len(shapes)}"
            )


def _network_plans(probes: list[Probe]) -> dict[str, Any]:
    """Bundle folders and warm-up plans of the tissue networks and, separately, of the extractor's directions."""

    def of(role: str) -> tuple[list[str], list[dict[str, Any]]]:
        chosen = [p for p in probes if p.role == role]
        return [str(p.source) for p in chosen], [plan_dict(p.inferer.plans[0]) for p in chosen]

    (paths, plans), (extractor_paths, extractor_plans) = of("tissue"), of("extractor")
    return {"network_paths": paths, "plans": plans, "extractor_paths": extractor_paths, "extractor_plans": extractor_plans}


def _timed_runs(segmenter: Any, probes: list[Probe], image: Any, image_path: str, repeats: int) -> dict[str, Any]:
    """Per repeat: one in-memory segmentation, the QC and the brain extraction alone, then one end-to-end run."""
    from inference.outputs import OutputOptions, output_paths, write_outputs

    keys = ("segment_seconds", "network_seconds", "extractor_network_seconds", "segment_cpu_seconds", "qc_seconds",
            "extraction_seconds", "extraction_network_seconds", "end_to_end_seconds")
    runs: dict[str, Any] = {key: [] for key in keys}
    own_before, machine_before = _own_cpu_seconds(), cpu_jiffies()
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as output_dir:
        paths = output_paths(image_path, output_dir, OutputOptions(qc=False))
        for _ in range(repeats):
            for key, seconds in _one_segmentation(segmenter, probes, image).items():
                runs[key].append(seconds)
            if segmenter.extractor is not None:
                runs["extraction_seconds"].append(_one_extraction(segmenter, probes, image))
                runs["extraction_network_seconds"].append(_network_seconds(probes, "extractor"))
            started = time.perf_counter()
            loaded, segmentation = segmenter.segment_file(image_path)
            write_outputs(loaded, segmentation, paths, {"family": segmenter.family})
            runs["end_to_end_seconds"].append(time.perf_counter() - started)
            del loaded, segmentation
    runs["others_load_cores"] = others_load(machine_before, cpu_jiffies(), _own_cpu_seconds() - own_before)
    return runs


def _one_segmentation(segmenter: Any, probes: list[Probe], image: Any) -> dict[str, float]:
    """Seconds of one whole segmentation (wall, CPU, the two kinds of network calls), then of its QC alone."""
    from inference.qc import assess

    for probe in probes:
        probe.timer.reset()
    cpu = time.process_time()
    segmentation = segmenter.segment(image)
    cpu = time.process_time() - cpu
    started = time.perf_counter()
    assess(image, segmentation.labels, segmentation.brain, segmenter.settings.qc)
    return {
        "segment_seconds": segmentation.seconds,
        "segment_cpu_seconds": cpu,
        "network_seconds": _network_seconds(probes, "tissue"),
        "extractor_network_seconds": _network_seconds(probes, "extractor"),
        "qc_seconds": time.perf_counter() - started,
    }


def _one_extraction(segmenter: Any, probes: list[Probe], image: Any) -> float:
    """Wall seconds of ``segmenter.extractor.extract`` alone on ``image`` (its network calls left in the probes)."""
    from brainseg_tf.io import Image

    for probe in probes:
        probe.timer.reset()
    started = time.perf_counter()
    segmenter.extractor.extract(Image(image.array, image.affine))  # as `Segmenter.segment` calls it
    return time.perf_counter() - started


def _network_seconds(probes: list[Probe], role: str) -> float:
    """Wall time during which a network call of ``role`` ran (the extractor's directions run one after another)."""
    return sum(p.timer.seconds for p in probes if p.role == role)


def _thread_settings() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plan_dict(plan: Any) -> dict[str, Any]:
    return {
        "box": [[s.start, s.stop] for s in plan.box] if plan.box else None,
        "slice_axis": plan.slice_axis,
        "slices": plan.slices,
        "stack_shape": list(plan.stack_shape),
        "batch_size": plan.batch_size,
        "batches": plan.batches,
        "stacks_run": plan.stacks_run,
    }


def add_flops(result: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per volume, run and useful, of the tissue networks and of the extractor, from their plans and `count_flops`."""
    from brainseg_tf.bundle import load_keras_model
    from brainseg_tf.models import count_flops

    models: dict[str, Any] = {}
    flops: dict[str, float] = {}
    for role, paths, plans in (("tissue", result["network_paths"], result["plans"]), ("extractor", result["extractor_paths"], result["extractor_plans"])):
        run = useful = 0
        for path, plan in zip(paths, plans):
            if plan["stacks_run"] == 0:
                continue
            if path not in models:
                models[path] = load_keras_model(path)
            per_stack = count_flops(models[path], tuple(plan["stack_shape"]))
            run += per_stack * plan["stacks_run"]
            useful += per_stack * plan["slices"]
        flops[f"gflop_run_{role}"], flops[f"gflop_useful_{role}"] = run / 1e9, useful / 1e9
    total = {"gflop_run": flops["gflop_run_tissue"] + flops["gflop_run_extractor"],
             "gflop_useful": flops["gflop_useful_tissue"] + flops["gflop_useful_extractor"]}
    return {**result, **flops, **total}


def add_ratios(result: dict[str, Any], possible: float) -> dict[str, Any]:
    """Achieved GFLOP/s (all FLOPs run / median seconds) and its ratio to ``possible`` GFLOP/s."""
    segment = statistics.median(result["segment_seconds"])
    network = statistics.median(n + e for n, e in zip(result["network_seconds"], result["extractor_network_seconds"]))
    return {
        **result,
        "possible_gflops": possible,
        "achieved_gflops_segment": result["gflop_run"] / segment,
        "achieved_gflops_network": result["gflop_run"] / network,
        "ratio_segment": result["gflop_run"] / segment / possible,
        "ratio_network": result["gflop_run"] / network / possible,
    }


def run_family(name: str, image: str, image_path: Path, settings: Settings) -> dict[str, Any]:
    """`measure_family` in a fresh spawned process, then its FLOPs per volume (unless the segmenter refused the image);
    ``image`` is its `IMAGES` key."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result = pool.submit(measure_family, name, str(BUNDLES[name]), str(image_path), settings).result()
    return {"image": image, **(result if "refused" in result else add_flops(result))}


def write_image(name: str, path: Path, quick: bool) -> tuple[tuple[int, ...], str]:
    """Write the `IMAGES` image ``name`` as float32 NIfTI; returns its shape and what it is."""
    if name == "full-head":
        return write_full_head(path, quick)
    if name == "mni152":
        return write_template(path, quick), "MNI152 T1 from nilearn"
    raise ValueError(f"Expected an image in {sorted(IMAGES)}. Received: {name!r}")


def write_full_head(path: Path, quick: bool) -> tuple[tuple[int, ...], str]:
    """The first held-out realistic-heads case, as-is (at half its size with ``quick``); returns its shape and name."""
    from brainseg_tf.config import Config
    from brainseg_tf.io import Volume, save_volume
    from evaluation.head_variants import head_cases

    case = next(iter(head_cases(Config(), 1, variants=("as-is",))))
    array = np.asarray(case.image.array, np.float32)
    if quick:
        array = shrunk(array)
    save_volume(Volume(array, case.image.affine), path, "image")
    return array.shape, f"synthetic full head {case.name} (realistic-heads suite, held-out case 1)"


def write_template(path: Path, quick: bool) -> tuple[int, ...]:
    """The 1 mm MNI152 T1 from nilearn as float32 NIfTI (at half its size with ``quick``); returns its shape."""
    from nilearn.datasets import load_mni152_template

    from brainseg_tf.io import Volume, save_volume

    template = load_mni152_template(resolution=1)
    array = np.asarray(template.get_fdata(), np.float32)
    if quick:
        array = shrunk(array)
    save_volume(Volume(array, template.affine), path, "image")
    return array.shape


def shrunk(array: np.ndarray) -> np.ndarray:
    """Every `QUICK_STEP`-th voxel along each axis, C-ordered: kept on a 1 mm affine, the head is that many times smaller."""
    return np.ascontiguousarray(array[::QUICK_STEP, ::QUICK_STEP, ::QUICK_STEP])


def table(results: list[dict[str, Any]], quick: bool, peer_seconds: float | None = None) -> str:
    """The figures as a markdown table: one column per family and image, targets judged in the cells (not with ``quick``)."""

    def judged(value: float, target: float, text: str, at_most: bool = True) -> str:
        if quick:
            return text
        ok = value <= target if at_most else value >= target
        shown = f"{target:g}" if at_most else f"{target:.0%}"
        return f"{text} ({'≤' if at_most else '≥'} {shown}: {'PASS' if ok else 'MISS'})"

    def seconds(r: dict[str, Any], key: str) -> str:
        value = _median(r[key])
        return "no extractor" if value is None else f"{value:.2f}"

    def whole(r: dict[str, Any]) -> str:
        s = _median(r["segment_seconds"])
        text = judged(s, TARGET_SECONDS[r["family"]], f"**{s:.2f}**")
        goal = GOAL_SECONDS[r["family"]]
        return text if quick else f"{text[:-1]}; goal {goal:g}: {'met' if s <= goal else 'not met'})"

    first_plans = [r["plans"][0] for r in results]
    rows: list[tuple[str, list[str]]] = [
        ("image shape", ["x".join(map(str, r["image_shape"])) for r in results]),
        ("networks: tissue + brain extractor directions", [f"{len(r['plans'])} + {len(r['extractor_plans'])}" for r in results]),
        ("tissue network calls per network (image blanked outside the brain)", [_calls(p) for p in first_plans]),
        ("tissue stacks per network: useful / run", [f"{p['slices']} / {p['stacks_run']}" for p in first_plans]),
        ("brain extractor calls, slice axis 0 / 1 / 2", [" ; ".join(_calls(p) for p in r["extractor_plans"]) or "no extractor" for r in results]),
        ("brain found (mL); QC verdict of the warm-up", [_verdict(r) for r in results]),
        ("GFLOP per volume, tissue: useful / run", [f"{r['gflop_useful_tissue']:.1f} / {r['gflop_run_tissue']:.1f}" for r in results]),
        ("GFLOP per volume, brain extraction: useful / run", [_extractor_gflop(r) for r in results]),
        ("bundle load (s)", [f"{r['load_seconds']:.2f}" for r in results]),
        ("first segmentation, warm-up (s)", [f"{r['warm_up_seconds']:.2f}" for r in results]),
        ("**whole pipeline: segment one volume (s)**", [whole(r) for r in results]),
        ("of which a tissue network call is running (s)", [seconds(r, "network_seconds") for r in results]),
        ("of which a brain extractor call is running (s)", [seconds(r, "extractor_network_seconds") if r["extractor_plans"] else "no extractor" for r in results]),
        ("CPU seconds of the segmentation, all threads", [seconds(r, "segment_cpu_seconds") for r in results]),
        ("**brain extraction alone, `extractor.extract` (s)**", [_bold(seconds(r, "extraction_seconds")) for r in results]),
        ("of which its network calls (s)", [seconds(r, "extraction_network_seconds") for r in results]),
        (f"brain extraction / fastest peer ({_peer(peer_seconds)})", [_peer_ratio(r, peer_seconds, judged) for r in results]),
        ("QC alone, `inference.qc.assess` (s)", [seconds(r, "qc_seconds") for r in results]),
        ("end to end: read + segment + write (s)", [seconds(r, "end_to_end_seconds") for r in results]),
        ("peak RSS up to the bundle load, matmul probe included (GB)", [f"{r['rss_after_load_bytes'] / 1e9:.2f}" for r in results]),
        ("**peak RSS (GB)**", [judged(r["peak_rss_bytes"] / 1e9, TARGET_PEAK_RSS_GB, f"**{r['peak_rss_bytes'] / 1e9:.2f}**") for r in results]),
        ("matmul float32 GFLOP/s before / after, n = " + ", ".join(results[0]["matmul_gflops"]), [_probes(r) for r in results]),
        ("possible GFLOP/s (best matmul of the run)", [f"{r['possible_gflops']:.0f}" for r in results]),
        ("achieved GFLOP/s: segment / network calls", [f"{r['achieved_gflops_segment']:.1f} / {r['achieved_gflops_network']:.1f}" for r in results]),
        ("**achieved / possible, segment**", [judged(r["ratio_segment"], TARGET_RATIO, f"**{r['ratio_segment']:.0%}**", at_most=False) for r in results]),
        ("achieved / possible, network calls", [f"{r['ratio_network']:.0%}" for r in results]),
        ("other processes' load during the timed runs (cores)", [_load(r["others_load_cores"]) for r in results]),
    ]
    lines = ["| figure | " + " | ".join(column_name(r) for r in results) + " |", "| --- |" + " --- |" * len(results)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def column_name(result: dict[str, Any]) -> str:
    return f"{result['family']}, {IMAGES[result['image']]}"


def extraction_summary(results: list[dict[str, Any]], peer_seconds: float | None, quick: bool = False) -> list[str]:
    """One line per family and image with an extractor: its seconds alone and, on the full head, their ratio to the peer's
    when given (judged, not with ``quick``)."""
    lines = []
    for r in results:
        extraction = _median(r["extraction_seconds"])
        if extraction is None:
            continue
        line = f"brain extraction alone, {column_name(r)}: {extraction:.2f} s (median of {len(r['extraction_seconds'])})"
        if peer_seconds and r["image"] == "full-head":
            ratio = extraction / peer_seconds
            verdict = "" if quick else f": {'PASS' if ratio <= TARGET_PEER_FRACTION else 'MISS'}"
            line += f"; / fastest peer {peer_seconds:g} s = {ratio:.3f} (target ≤ {TARGET_PEER_FRACTION:g}{verdict})"
        lines.append(line)
    return lines or ["brain extraction: no bundle measured holds a brain extractor"]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _bold(text: str) -> str:
    return text if text == "no extractor" else f"**{text}**"


def _calls(plan: dict[str, Any]) -> str:
    return f"{plan['batches']} x {plan['batch_size']} stacks of {'x'.join(map(str, plan['stack_shape']))}"


def _verdict(result: dict[str, Any]) -> str:
    brain = "no extractor" if result["brain_ml"] is None else f"{result['brain_ml']:.0f} mL"
    if result.get("already_stripped"):
        brain += " (arrived skull-stripped: its nonzero region; the extractor ran only to tell it from a head on zeroed air)"
    reasons = f": {', '.join(result['qc_reasons'])}" if result["qc_reasons"] else ""
    qc = "no QC" if result["qc_status"] is None else f"QC {result['qc_status']} (score {result['qc_score']:.2f}){reasons}"
    return f"{brain}; {qc}"


def _extractor_gflop(result: dict[str, Any]) -> str:
    if not result["extractor_plans"]:
        return "no extractor"
    return f"{result['gflop_useful_extractor']:.1f} / {result['gflop_run_extractor']:.1f}"


def _peer(peer_seconds: float | None) -> str:
    return "--peer-seconds not given" if peer_seconds is None else f"{peer_seconds:g} s, full head only"


def _peer_ratio(result: dict[str, Any], peer_seconds: float | None, judged: Any) -> str:
    extraction = _median(result["extraction_seconds"])
    if extraction is None:
        return "no extractor"
    if peer_seconds is None or result["image"] != "full-head":
        return "n/a"
    ratio = extraction / peer_seconds
    return judged(ratio, TARGET_PEER_FRACTION, f"**{ratio:.3f}**")


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


def parse_options(argv: list[str] | None = None) -> Options:
    """Command line -> `Options`."""
    from brainseg_tf.config import InferenceConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: each image at half its size (every second voxel), one repeat, QC refuses nothing, targets not judged")
    parser.add_argument("--image", choices=(*IMAGES, "both"), default="both", help="the synthetic full head, the MNI152 T1, or both (default)")
    parser.add_argument("--repeats", type=int, default=None, help="timed segmentations per family and image (default 3; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=InferenceConfig.batch_size, help="the most stacks per network call (inference.batch_size of the config)")
    parser.add_argument("--workers", type=int, default=InferenceConfig.workers, help="network calls in flight at once (inference.workers of the config)")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra-op threads (default: TensorFlow's, all cores)")
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default",
                        help="TF_ENABLE_ONEDNN_OPTS in the measuring processes (default: as python -m inference and the plugins "
                        "run, on unless the environment sets it)")
    parser.add_argument("--families", nargs="+", choices=sorted(BUNDLES), default=list(BUNDLES), help="which bundles to run")
    parser.add_argument("--peer-seconds", type=float, default=None,
                        help="the fastest peer skull-stripper's seconds on a full head (measured elsewhere): prints brain extraction / this, "
                        f"against the target {TARGET_PEER_FRACTION:g}")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1 or args.batch_size < 1 or args.workers < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"expected --repeats, --batch-size, --workers and --threads >= 1, received {repeats}, {args.batch_size}, "
                     f"{args.workers} and {args.threads}")
    if args.peer_seconds is not None and not (np.isfinite(args.peer_seconds) and args.peer_seconds > 0):
        parser.error(f"expected --peer-seconds > 0, received {args.peer_seconds}")
    settings = Settings(repeats, args.batch_size, args.threads, args.workers, args.onednn, args.quick)
    images = list(IMAGES) if args.image == "both" else [args.image]
    return Options(settings, args.families, images, args.json, args.peer_seconds)


def main(argv: list[str] | None = None) -> None:
    options = parse_options(argv)
    settings = options.settings
    logging.basicConfig(level=logging.WARNING)
    info = environment(settings)
    results, described = [], []
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as folder:
        for image in options.images:
            path = Path(folder) / f"{image.replace('-', '_')}.nii.gz"
            shape, what = write_image(image, path, settings.quick)
            described.append(f"{IMAGES[image]}: {what}{' (quick: every second voxel)' if settings.quick else ''}, {'x'.join(map(str, shape))} at 1 mm")
            results += [run_family(name, image, path, settings) for name in options.families]
    refused = [r for r in results if "refused" in r]
    measured = [r for r in results if "refused" not in r]
    if measured:
        possible = max(rate for r in measured for rate in r["matmul_gflops"].values())  # the machine's best seen in this run
        measured = [add_ratios(r, possible) for r in measured]
    info["load_average_at_end"] = os.getloadavg()
    print(f"{info['date']}; machine: {info['machine']}, Python {info['python']}, TensorFlow {info['tensorflow']}, "
          f"TF_ENABLE_ONEDNN_OPTS {info['TF_ENABLE_ONEDNN_OPTS']}, threads: {info['threads']}, workers: {settings.workers}")
    print("images: " + "; ".join(described))
    print(f"batch size {settings.batch_size}; median of {settings.repeats} timed run(s) after one warm-up; "
          f"load average {info['load_average_at_start'][0]:.2f} at start, {info['load_average_at_end'][0]:.2f} at end")
    if measured:
        print(table(measured, settings.quick, options.peer_seconds))
        print("\n".join(extraction_summary(measured, options.peer_seconds, settings.quick)))
    for r in refused:
        print(f"REFUSED {column_name(r)}: the segmenter refused the image, nothing measured ({r['refused']})")
    if options.json_path:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": {**info, "images": described, "peer_seconds": options.peer_seconds}, "results": measured + refused}
        options.json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {options.json_path}")
    if refused:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
