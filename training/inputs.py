"""What a training run feeds keras: the shared generator's training stream and a fixed validation set."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from brainseg_tf.config import Config, GeneratorConfig
from brainseg_tf.data import SampleSource, TargetEncoding, make_dataset
from brainseg_tf.data.head_source import HEAD_TARGETS, HeadSource, make_head_dataset
from brainseg_tf.data.sampling import SubjectSampler
from brainseg_tf.datasets import Subject, build_cache, read_info, read_subjects
from brainseg_tf.errors import ConfigError, DatasetError
from brainseg_tf.labels import LabelSet, get_label_set
from brainseg_tf.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

VALIDATION_EPOCH = 0
"""Generator epoch the validation samples are drawn from (with the generator seed): the same for every
epoch and for both families, since nothing about a sample depends on the target encoding."""


@dataclass(frozen=True)
class RunData:
    """The cached subjects a run trains and validates on.

    Attributes:
        label_set: the label set trained on: the cache's, or that of the heads' targets.
        train: training subjects (with heads: the brains they are grown around).
        val: validation subjects (idem).
        heads: ``off``, or the target of fresh synthetic heads (``tissue``, ``brain`` or ``structures``, see `DataConfig.heads`).
        preprocessing: the recipe heads are prepared with (the run's input contract).
        heads_fraction: share of batches and validation samples from the heads (`DataConfig.heads_fraction`).
        cached_label_set: the cache's own label set (the cached batches' labels).
    """

    label_set: LabelSet
    train: list[Subject]
    val: list[Subject]
    heads: str = "off"
    preprocessing: Preprocessing | None = None
    heads_fraction: float = 1.0
    cached_label_set: LabelSet | None = None
    samplers: dict[GeneratorConfig, SubjectSampler] = field(default_factory=dict, compare=False, repr=False)

    def train_sampler(self, config: GeneratorConfig) -> SubjectSampler:
        """The training subjects' sampler for ``config``, built once and shared by every network of the run (see
        `brainseg_tf.data.make_dataset`: a dataset's source lives as long as the process)."""
        if config not in self.samplers:
            self.samplers[config] = SubjectSampler(self.train, (self.cached_label_set or self.label_set).num_classes, config)
        return self.samplers[config]


def run_label_set(config: Config) -> LabelSet:
    """The label set a run's networks learn: the brain mask's for heads against the brain, else ``data.label_set``'s."""
    return HEAD_TARGETS["brain"] if config.data.heads == "brain" else get_label_set(config.data.label_set)


def load_run_data(config: Config) -> RunData:
    """Build (or reuse) the cache for ``config.data`` and load its training and validation subjects.

    Raises:
        DatasetError: the cache cannot be built, or a split is empty.
        ConfigError: a random slice axis asked for cached subjects (only head sources draw it).
    """
    if config.generator.random_slice_axis and config.data.heads == "off":
        raise ConfigError("Expected generator.random_slice_axis only with synthetic heads (data.heads tissue, brain or structures). Received: data.heads=off")
    path = build_cache(config)
    label_set = run_label_set(config) if config.data.heads != "off" else read_info(path).label_set
    preprocessing = Preprocessing.from_config(config.preprocess)
    cached_label_set = read_info(path).label_set
    grown_around = "structures" if config.data.heads == "structures" else "tissue"
    if config.data.heads != "off" and cached_label_set.name != grown_around:
        raise ConfigError(f"Expected a cache of {grown_around} labels to grow heads around with data.heads={config.data.heads} "
                          f"(data.label_set: {grown_around}). Received: {cached_label_set.name} labels in {path.name}")
    if config.data.heads != "off" and config.data.heads_fraction < 1 and cached_label_set.num_classes != label_set.num_classes:
        raise ConfigError(f"Expected data.heads_fraction 1 with data.heads={config.data.heads} (the cache holds {cached_label_set.name} "
                          f"labels, not {label_set.name}). Received: heads_fraction={config.data.heads_fraction!r}")
    data = RunData(label_set, read_subjects(path, "train"), read_subjects(path, "val"), config.data.heads, preprocessing,
                   config.data.heads_fraction, cached_label_set)
    for split in ("train", "val"):
        if not getattr(data, split):
            raise DatasetError(f"{path}: no {split} subjects; a training run needs both train and val subjects")
    heads = "" if data.heads == "off" else f"; fresh synthetic heads around them ({100 * data.heads_fraction:.0f} % of batches), {data.heads} targets"
    logger.info("data: %s, %d train / %d val subjects%s", path.name, len(data.train), len(data.val), heads)
    return data


def training_dataset(data: RunData, config: GeneratorConfig, encoding: TargetEncoding, initial_epoch: int) -> tf.data.Dataset:
    """The endless augmented stream whose n-th block of `steps_per_epoch` batches is generator epoch ``initial_epoch + n``."""
    if data.heads != "off":
        cached_sampler = data.train_sampler(config) if data.heads_fraction < 1 else None
        dataset = make_head_dataset(data.train, config, data.preprocessing, encoding, data.heads, epoch=initial_epoch, repeat=True,  # type: ignore[arg-type]
                                    heads_fraction=data.heads_fraction, cached_label_set=data.cached_label_set, cached_sampler=cached_sampler)
    else:
        dataset = make_dataset(data.train, data.label_set, config, encoding, epoch=initial_epoch, repeat=True, sampler=data.train_sampler(config))
    return _shard_by_data(dataset)


def validation_samples(data: RunData, config: GeneratorConfig, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` unaugmented samples from the validation subjects: images float32 (N, ...) and class maps uint8 (N, ...).

    Sample i is sample i of generator epoch `VALIDATION_EPOCH` (seed ``config.seed``), so every epoch,
    both families and every ensemble member see the same samples. With heads, the first
    ``round(count * heads_fraction)`` are cut from fixed heads (one per batch), the rest from the cached subjects.

    Raises:
        ConfigError: `count` < 1.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"Expected training.validation_samples as an int >= 1. Received: validation_samples={count!r}")
    from_heads = 0 if data.heads == "off" else count if data.heads_fraction >= 1 else round(count * data.heads_fraction)
    parts = []
    if from_heads:  # a fixed head per batch of the validation epoch (never shared between batches), samples unaugmented
        one_per_batch = dataclasses.replace(config, batches_per_head=1)
        heads = HeadSource(data.val, one_per_batch, data.preprocessing, data.heads, augment=False)  # type: ignore[arg-type]
        batches = [heads.batch(VALIDATION_EPOCH, np.arange(first, first + config.batch_size)) for first in range(0, from_heads, config.batch_size)]
        parts.append((np.concatenate([b[0] for b in batches])[:from_heads], np.concatenate([b[1] for b in batches])[:from_heads]))
    if from_heads < count:  # the cached subjects as they are: sample i of the validation epoch
        source = SampleSource(data.val, data.cached_label_set or data.label_set, config, augment=False)
        samples = [source.sample(VALIDATION_EPOCH, index) for index in range(count - from_heads)]
        parts.append((np.stack([image for image, _ in samples]), np.stack([labels for _, labels in samples])))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.uint8)


def validation_dataset(data: RunData, config: GeneratorConfig, encoding: TargetEncoding, count: int) -> tf.data.Dataset:
    """The `validation_samples`, drawn once, in batches of ``config.batch_size`` (the last may be partial);
    class maps are held as uint8 and encoded batch by batch."""
    images, classes = validation_samples(data, config, count)
    num_classes = data.label_set.num_classes
    dataset = tf.data.Dataset.from_tensor_slices((images, classes)).batch(config.batch_size)
    dataset = dataset.map(lambda x, y: (x, encoding.encode(y, num_classes)))
    logger.info("validation: %d fixed samples from %d subject(s)", count, len(data.val))
    return _shard_by_data(dataset)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Multi-worker runs shard batches between workers (the samples come from no files to shard)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
