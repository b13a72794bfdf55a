"""Generator throughput vs. what a training step of the default model consumes (samples/s).

Run: ``make bench-generator`` (or ``.venv/bin/python benchmarks/generator_throughput.py [--quick]``).
Prints the generator's samples/s, the training step's samples/s for both families, an end-to-end
``fit`` fed by the generator, and the ratio generator / training (target: at least 3).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from brainseg_tf.config import QUICK_OVERRIDES, Config, load_config  # noqa: E402
from brainseg_tf.data import TargetEncoding, make_dataset, steps_per_epoch  # noqa: E402
from brainseg_tf.datasets import build_cache, read_info, read_subjects  # noqa: E402
from brainseg_tf.models import build_segmenter, compile_segmenter, count_flops  # noqa: E402


def generator_rate(dataset: tf.data.Dataset, batches: int, batch_size: int) -> float:
    """Samples/s of iterating the dataset to host tensors, after two warm-up batches."""
    iterator = iter(dataset)
    for _ in range(2):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def training_rate(model: tf.keras.Model, batch: tuple[tf.Tensor, tf.Tensor], steps: int) -> float:
    """Samples/s of train_on_batch on one fixed batch (no input pipeline), after warm-up."""
    for _ in range(3):
        model.train_on_batch(*batch)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*batch)
    return steps * int(batch[0].shape[0]) / (time.perf_counter() - started)


def fit_rate(model: tf.keras.Model, dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Samples/s of model.fit fed by the generator (both share the CPU): the second of two epochs."""
    timer = EpochTimer()
    model.fit(dataset, epochs=2, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer])
    return steps * batch_size / timer.seconds[-1]


class EpochTimer(tf.keras.callbacks.Callback):
    """Wall seconds of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def run(config: Config, batches: int, steps: int) -> dict[str, float]:
    """Measure everything and return the figures."""
    cache = build_cache(config)
    label_set = read_info(cache).label_set
    subjects = read_subjects(cache, "train")
    generator = config.generator
    softmax = make_dataset(subjects, label_set, generator, TargetEncoding.softmax(), repeat=True)
    sigmoid = make_dataset(subjects, label_set, generator, TargetEncoding.sigmoid(1), repeat=True)
    figures = {"generator": generator_rate(softmax, batches, generator.batch_size)}
    inputs, targets = next(iter(softmax))
    input_shape = tuple(inputs.shape[1:])
    for family, targets_of_family, dataset in [
        ("multiclass", targets, softmax),
        ("single_class", targets[..., 1:2], sigmoid),
    ]:
        model = build_segmenter(family, input_shape, label_set.num_classes, config.model)
        compile_segmenter(model, family, config.model)
        figures[f"train_{family}"] = training_rate(model, (inputs, targets_of_family), steps)
        figures[f"fit_{family}"] = fit_rate(model, dataset, steps, generator.batch_size)
        figures[f"params_{family}"] = model.count_params()
        figures[f"gflops_{family}"] = count_flops(model, input_shape) / 1e9
    figures["steps_per_epoch"] = steps_per_epoch(generator)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small test setting (3 mm, 32x32 crops)")
    parser.add_argument("--batches", type=int, default=40, help="generator batches timed")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config(overrides=QUICK_OVERRIDES if args.quick else None)
    g = config.generator
    figures = run(config, args.batches, args.steps)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
    print(f"sample: {g.mode} {g.slice_shape if g.mode == 'slices' else g.patch_shape}, "
          f"{g.channels} channels, batch {g.batch_size}, parallel_calls {g.parallel_calls}, augmented")
    print(f"generator:                         {figures['generator']:8.1f} samples/s")
    for family in ("multiclass", "single_class"):
        print(f"train step {family:<13}           {figures[f'train_{family}']:8.1f} samples/s "
              f"({figures[f'params_{family}']:,.0f} params, {figures[f'gflops_{family}']:.2f} GFLOP/sample forward)")
        print(f"fit fed by generator {family:<13} {figures[f'fit_{family}']:8.1f} samples/s")
    hungriest = max(figures["train_multiclass"], figures["train_single_class"])  # the family that consumes most
    ratio = figures["generator"] / hungriest
    print(f"ratio generator / training:        {ratio:8.1f}x (target >= 3x) {'OK' if ratio >= 3 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
