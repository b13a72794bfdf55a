"""Training jobs: one softmax network, one sigmoid network, or the sigmoid ensemble, each resumable and bundled.

A run folder holds::

    config.yaml        the effective configuration
    checkpoints/       last.keras, best.weights.h5, state.json (see training.checkpoints)
    log.csv            one row per epoch (appended to on resume)
    tensorboard/       TensorBoard event files
    bundle/            the final bundle (default; --bundle puts it elsewhere)

An ensemble's run folder holds one such folder per member under ``members/<class>``, and its own
``config.yaml`` and ``bundle/`` (written once every member's bundle exists).

Fine-tuning: ``training.init_from`` starts a fresh run from a bundle's weights (`start_from_bundle`).

Resuming: rerunning a command with the same run folder loads ``checkpoints/last.keras`` (weights,
optimizer iterations and Adam moments) and continues at the epoch after the one ``state.json``
records, with the generator's stream starting at that epoch's seed, the CSV log trimmed to the
checkpointed epochs and early stopping's count carried over. A run that is complete (all epochs,
or stopped early) is only re-bundled. The bundle always holds the weights of the epoch with the
lowest validation loss, and that epoch's validation values as its metrics.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from brainseg_tf.config import Config
from brainseg_tf.data import TargetEncoding, steps_per_epoch
from brainseg_tf.errors import BrainsegError, ConfigError
from brainseg_tf.labels import LabelSet, class_slug
from brainseg_tf.models import build_segmenter, compile_segmenter
from brainseg_tf.regions import AtlasFrame, Region
from training.callbacks import EpochCheckpoint, make_callbacks
from training.checkpoints import RunCheckpoints, RunState, trim_csv_log
from training.evaluate import ensemble_validation_metrics
from training.inputs import RunData, load_run_data, run_label_set, training_dataset, validation_dataset, validation_samples
from training.run_config import check_training_config, save_config
from training.strategy import configure_precision, is_chief, make_strategy, seed_everything, worker_directory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkPlan:
    """One network to train: its family, class, and where its run folder and bundle go.

    Attributes:
        family: ``multiclass`` (softmax over every class) or ``single_class`` (sigmoid of `class_index`).
        class_index: the single-class network's class; None for multiclass.
        label_set: the label set trained on.
        run_dir: the run folder.
        bundle_dir: where the final bundle goes.
    """

    family: str
    class_index: int | None
    label_set: LabelSet
    run_dir: Path
    bundle_dir: Path

    @property
    def encoding(self) -> TargetEncoding:
        return TargetEncoding.softmax() if self.class_index is None else TargetEncoding.sigmoid(self.class_index)

    @property
    def class_names(self) -> list[str]:
        names = self.label_set.names
        return list(names) if self.class_index is None else [names[self.class_index]]

    @property
    def title(self) -> str:
        return self.family if self.class_index is None else f"{self.family} {self.label_set.names[self.class_index]!r}"

    @property
    def checkpoints(self) -> RunCheckpoints:
        return RunCheckpoints(self.run_dir / "checkpoints")


def train_network(
    config: Config, family: str, *, label: str | None = None, run_dir: Path | None = None, bundle_dir: Path | None = None
) -> Path | None:
    """Train (or resume) one network and write its bundle.

    Args:
        config: the effective configuration.
        family: ``multiclass`` or ``single_class``.
        label: the class of a single-class network (a class name of ``config.data.label_set``).
        run_dir: run folder; ``<training.output_dir>/multiclass`` or ``.../single-class-<class>`` by default.
        bundle_dir: bundle folder; ``<run_dir>/bundle`` by default.

    Returns:
        The bundle path on the chief; None on the other workers of a multi-worker run.

    Raises:
        BrainsegError: a bad configuration, label name or dataset.
    """
    check_training_config(config.training)
    label_set = run_label_set(config)
    class_index = _class_index(family, label, label_set)
    if run_dir is None:
        suffix = "" if class_index is None else f"-{class_slug(label_set.names[class_index])}"
        run_dir = Path(config.training.output_dir) / f"{family.replace('_', '-')}{suffix}"
    plan = NetworkPlan(family, class_index, label_set, Path(run_dir), Path(bundle_dir or Path(run_dir) / "bundle"))
    strategy = start_runtime(config)
    data = load_run_data(config)
    return fit_network(plan, config, data, strategy)


def train_ensemble(
    config: Config, *, labels: Sequence[str] | None = None, run_dir: Path | None = None, bundle_dir: Path | None = None
) -> Path | None:
    """Train (or resume) the single-class members of the ensemble, then write the ensemble bundle.

    Members train one after another; with `labels`, only those members train (so a cluster can run
    each member as its own job). Members whose run is complete and bundled are skipped. The ensemble
    bundle is written once every foreground class has a member bundle.

    Returns:
        The ensemble bundle path, or None when members are missing or on a non-chief worker.

    Raises:
        BrainsegError: a bad configuration, label name or dataset.
    """
    check_training_config(config.training)
    label_set = run_label_set(config)
    member_classes = ensemble_member_classes(label_set, config)
    wanted = [label_set.class_index(name) for name in labels] if labels else list(member_classes)
    for index in wanted:
        _class_index("single_class", label_set.names[index], label_set)
        if index not in member_classes:
            raise ConfigError(f"Expected a member class of this ensemble ({', '.join(label_set.names[i] for i in member_classes)}). "
                              f"Received: {label_set.names[index]!r} (with training.ensemble_pairs=mirrored its pair's member segments it)")
    run_dir = Path(run_dir or Path(config.training.output_dir) / "ensemble")
    members = {index: _member_plan(run_dir, label_set, index) for index in member_classes}
    strategy = start_runtime(config)
    data = load_run_data(config)
    for index in dict.fromkeys(wanted):
        if _is_finished(members[index], config.training.epochs):
            logger.info("member %s: already trained and bundled, skipping", label_set.names[index])
            continue
        fit_network(members[index], config, data, strategy)
    if not is_chief(strategy):
        return None
    missing = [label_set.names[i] for i, plan in members.items() if not _is_finished(plan, config.training.epochs)]
    if missing:
        logger.info("ensemble bundle not written yet: members %s still to train", ", ".join(missing))
        return None
    save_config(run_dir, config)
    return _write_ensemble(Path(bundle_dir or run_dir / "bundle"), list(members.values()), config, data)


def ensemble_member_classes(label_set: LabelSet, config: Config) -> tuple[int, ...]:
    """The classes an ensemble trains a member for: every foreground class, or with ``training.ensemble_pairs`` mirrored
    only the first class of each left/right pair (its member segments the second on the mirrored volume).

    Raises:
        ConfigError: mirrored pairs on a label set without pairs, or with sagittal slices (a sagittal sample's mirror is
            another slice, so the validation samples cannot be mirrored).
    """
    if config.training.ensemble_pairs == "apart":
        return label_set.foreground_classes
    if config.training.ensemble_pairs != "mirrored":
        raise ConfigError(f"Expected training.ensemble_pairs 'apart' or 'mirrored'. Received: {config.training.ensemble_pairs!r}")
    if not label_set.lr_pairs:
        raise ConfigError(f"Expected training.ensemble_pairs=mirrored on a label set with left/right pairs. Received: {label_set.name!r}, no pairs")
    if config.generator.mode == "slices" and config.generator.slice_axis == 0:
        raise ConfigError("Expected training.ensemble_pairs=mirrored with axial or coronal slices or patches. Received: generator.slice_axis=0")
    seconds = {right for _, right in label_set.lr_pairs}
    return tuple(index for index in label_set.foreground_classes if index not in seconds)


def _member_plan(run_dir: Path, label_set: LabelSet, class_index: int) -> NetworkPlan:
    member_dir = run_dir / "members" / class_slug(label_set.names[class_index])
    return NetworkPlan("single_class", class_index, label_set, member_dir, member_dir / "bundle")


def fit_network(plan: NetworkPlan, config: Config, data: RunData, strategy: tf.distribute.Strategy) -> Path | None:
    """Train `plan`'s network from scratch or from its last checkpoint, then bundle its best weights (chief only).

    Returns:
        The bundle path on the chief; None on other workers.
    """
    chief = is_chief(strategy)
    training = config.training
    state = plan.checkpoints.read_state()  # every worker resumes from the chief's checkpoints
    if chief:
        save_config(plan.run_dir, config)
    seed_everything(training)
    with strategy.scope():
        model = plan.checkpoints.load_last() if state else _new_model(plan, config)
    if state and state.is_complete(training.epochs):
        logger.info("%s: nothing left to train (epoch %d done%s)", plan.title, state.epoch, ", stopped early" if state.stopped else "")
    else:
        state = _fit(plan, config, data, strategy, model, state)
    if not chief:
        return None
    model.load_weights(plan.checkpoints.best_weights)
    logger.info("%s: best epoch %d, %s", plan.title, state.best_epoch, _format_metrics(state.validation_metrics()))
    return _write_network_bundle(plan, config, model, state)


def _fit(
    plan: NetworkPlan, config: Config, data: RunData, strategy: tf.distribute.Strategy, model: keras.Model, state: RunState | None
) -> RunState:
    training = config.training
    initial_epoch = 0 if state is None else state.epoch + 1
    work_dir = worker_directory(plan.run_dir, strategy)
    checkpoints = RunCheckpoints(work_dir / "checkpoints")
    checkpoints.discard_partial_files()
    trim_csv_log(work_dir / "log.csv", -1 if state is None else state.epoch)
    callbacks = make_callbacks(checkpoints, state, training=training, log_dir=work_dir)
    train = training_dataset(data, config.generator, plan.encoding, initial_epoch)
    val = validation_dataset(data, config.generator, plan.encoding, training.validation_samples)
    if state is None:
        logger.info("%s: training epochs 0..%d in %s", plan.title, training.epochs - 1, plan.run_dir)
    else:
        logger.info("%s: resuming at epoch %d of %d (optimizer step %d) in %s",
                    plan.title, initial_epoch, training.epochs, optimizer_step(model), plan.run_dir)
    started = time.perf_counter()
    try:
        model.fit(
            train, epochs=training.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch(config.generator),
            validation_data=val, callbacks=callbacks, shuffle=False, verbose=2,
        )
    finally:
        if work_dir != plan.run_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    logger.info("%s: trained in %.1f s", plan.title, time.perf_counter() - started)
    checkpoint = next(c for c in callbacks if isinstance(c, EpochCheckpoint))
    if checkpoint.state is None:
        raise BrainsegError(f"{plan.title}: training ended before its first epoch completed")
    return checkpoint.state


def optimizer_step(model: keras.Model) -> int:
    """The optimizer's iteration count (also for variables mirrored by a distribution strategy)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _new_model(plan: NetworkPlan, config: Config) -> keras.Model:
    generator = config.generator
    input_shape = (None, None, generator.channels) if generator.mode == "slices" else (None, None, None, 1)
    model = build_segmenter(plan.family, input_shape, plan.label_set.num_classes, config.model)  # type: ignore[arg-type]
    if config.training.init_from:
        start_from_bundle(model, plan, Path(config.training.init_from))
    return compile_segmenter(model, plan.family, config.model, config.training.learning_rate, plan.class_names)  # type: ignore[arg-type]


def start_from_bundle(model: keras.Model, plan: NetworkPlan, path: Path) -> None:
    """Copy the weights of the bundle at ``path`` into a freshly built ``model`` (``training.init_from``).

    The bundle is verified and its Keras file loaded in safe mode (`load_keras_model`). A model bundle must be of
    the plan's family, label set and class; an ensemble bundle gives a single-class plan its class's member.

    Raises:
        BundleError: the bundle fails verification or cannot be loaded.
        ConfigError: the bundle's networks are not this run's (family, label set, class, or weight shapes).
    """
    from brainseg_tf.bundle import load_keras_model, read_bundle_info

    info = read_bundle_info(path)
    if info.kind == "ensemble":
        chosen = [m for m in info.members if m.class_index == plan.class_index]
        if plan.class_index is None or not chosen:
            raise ConfigError(f"Expected training.init_from with a member for {plan.title}. Received: the ensemble bundle {path}")
        info = chosen[0]
    if (info.family, info.class_index, info.label_set) != (plan.family, plan.class_index, plan.label_set):
        raise ConfigError(f"Expected training.init_from to hold a {plan.title} network on label set {plan.label_set.name!r}. "
                          f"Received: {info.family} class {info.class_index} on {info.label_set.name!r} ({info.path})")
    source = load_keras_model(info.path)
    shapes = [tuple(w.shape) for w in source.get_weights()], [tuple(w.shape) for w in model.get_weights()]
    if shapes[0] != shapes[1]:
        raise ConfigError(f"Expected training.init_from to hold this run's architecture (config.model). Received: other weight shapes in {info.path}")
    model.set_weights(source.get_weights())
    logger.info("%s: starting from the weights of %s", plan.title, info.path)


def _write_network_bundle(plan: NetworkPlan, config: Config, model: keras.Model, state: RunState) -> Path:
    from brainseg_tf.bundle import write_model_bundle

    path = write_model_bundle(
        plan.bundle_dir, model, family=plan.family, label_set=plan.label_set, config=config,
        metrics=state.validation_metrics(), class_index=plan.class_index,
    )
    logger.debug("%s: bundle written to %s", plan.title, path)
    return Path(path)


def _write_ensemble(bundle_dir: Path, members: list[NetworkPlan], config: Config, data: RunData) -> Path:
    """Score the fused members on the validation samples, then gather their bundles into the ensemble bundle."""
    from brainseg_tf.bundle import write_ensemble_bundle

    samples = validation_samples(data, config.generator, config.training.validation_samples)
    bundles = [plan.bundle_dir for plan in members]
    class_indices = [plan.class_index for plan in members]
    mirrored = config.training.ensemble_pairs == "mirrored"
    partners = data.label_set.lr_partners() if mirrored else {}
    metrics = ensemble_validation_metrics(bundles, class_indices, data.label_set, samples, config.generator.batch_size,  # type: ignore[arg-type]
                                          {index: partners[index] for index in class_indices if index in partners})  # type: ignore[misc]
    for plan in members:
        state = plan.checkpoints.read_state()
        if state is not None and "val_loss" in state.best_logs:
            metrics[f"val_loss_{class_slug(plan.label_set.names[plan.class_index])}"] = state.best_logs["val_loss"]  # type: ignore[index]
    regions = member_regions(data.label_set, class_indices, config.training.member_region_margin_mm)  # type: ignore[arg-type]
    path = write_ensemble_bundle(bundle_dir, bundles, label_set=data.label_set, config=config, metrics=metrics, mirrored_pairs=mirrored, regions=regions)
    logger.info("ensemble of %d members: bundle written to %s (%s)", len(members), path, _format_metrics(metrics))
    return Path(path)


def member_regions(label_set: LabelSet, class_indices: Sequence[int], margin_mm: float) -> tuple[AtlasFrame, dict[int, Region]] | None:
    """The atlas frame and each member class's atlas box grown by ``margin_mm`` (`brainseg_tf.regions`); None at margin 0.

    Raises:
        ConfigError: a negative margin, or regions asked for a label set without an atlas (only ``structures`` has one).
    """
    if margin_mm == 0:
        return None
    if not margin_mm > 0:
        raise ConfigError(f"Expected training.member_region_margin_mm >= 0. Received: {margin_mm!r}")
    from brainseg_tf.datasets import embedded
    from brainseg_tf.datasets.structures import structures_on_template
    from brainseg_tf.io import LabelMap
    from brainseg_tf.labels import STRUCTURES
    from brainseg_tf.regions import atlas_frame, atlas_regions

    if label_set.name != STRUCTURES.name:
        raise ConfigError(f"Expected training.member_region_margin_mm only on the structures label set (its atlas gives the regions). Received: {label_set.name!r}")
    atlas = structures_on_template(embedded.load_template(1.0))
    classes = LabelMap(STRUCTURES.to_classes(np.asarray(atlas.array)), atlas.affine)
    return atlas_frame(classes), atlas_regions(classes, class_indices, margin_mm)


def _is_finished(plan: NetworkPlan, epochs: int) -> bool:
    """A member whose run is complete for `epochs` and whose bundle exists (bundles are written atomically)."""
    state = plan.checkpoints.read_state()
    return state is not None and state.is_complete(epochs) and (plan.bundle_dir / "bundle.json").is_file()


def start_runtime(config: Config) -> tf.distribute.Strategy:
    """Create the distribution strategy (first: multi-worker needs that) and set the precision policy."""
    strategy = make_strategy(config.training.strategy)
    configure_precision(config.training.mixed_precision)
    return strategy


def _class_index(family: str, label: str | None, label_set: LabelSet) -> int | None:
    if family == "multiclass":
        if label is not None:
            raise ConfigError(f"Expected no label for a multiclass network. Received: label={label!r}")
        return None
    if family != "single_class":
        raise ConfigError(f"Expected family in ['multiclass', 'single_class']. Received: family={family!r}")
    if label is None:
        raise ConfigError(f"Expected a class name for a single-class network, one of: {', '.join(label_set.names[1:])}")
    index = label_set.class_index(label)
    if index == 0:
        raise ConfigError(f"Expected a foreground class, not {label_set.names[0]!r}. Received: label={label!r}")
    return index


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()) or "no validation metrics"
