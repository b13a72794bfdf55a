"""What a training run feeds keras: the shared generator's training stream and a fixed validation set."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from brainseg_tf.config import Config, GeneratorConfig
from brainseg_tf.data import SampleSource, TargetEncoding, make_dataset
from brainseg_tf.datasets import Subject, build_cache, read_info, read_subjects
from brainseg_tf.errors import ConfigError, DatasetError
from brainseg_tf.labels import LabelSet

logger = logging.getLogger(__name__)

VALIDATION_EPOCH = 0
"""Generator epoch the validation samples are drawn from (with the generator seed): the same for every
epoch and for both families, since nothing about a sample depends on the target encoding."""


@dataclass(frozen=True)
class RunData:
    """The cached subjects a run trains and validates on.

    Attributes:
        label_set: the cache's label set.
        train: training subjects.
        val: validation subjects.
    """

    label_set: LabelSet
    train: list[Subject]
    val: list[Subject]


def load_run_data(config: Config) -> RunData:
    """Build (or reuse) the cache for ``config.data`` and load its training and validation subjects.

    Raises:
        DatasetError: the cache cannot be built, or a split is empty.
    """
    path = build_cache(config)
    data = RunData(read_info(path).label_set, read_subjects(path, "train"), read_subjects(path, "val"))
    for split in ("train", "val"):
        if not getattr(data, split):
            raise DatasetError(f"{path}: no {split} subjects; a training run needs both train and val subjects")
    logger.info("data: %s, %d train / %d val subjects", path.name, len(data.train), len(data.val))
    return data


def training_dataset(data: RunData, config: GeneratorConfig, encoding: TargetEncoding, initial_epoch: int) -> tf.data.Dataset:
    """The endless augmented stream whose n-th block of `steps_per_epoch` batches is generator epoch ``initial_epoch + n``."""
    dataset = make_dataset(data.train, data.label_set, config, encoding, epoch=initial_epoch, repeat=True)
    return _shard_by_data(dataset)


def validation_samples(data: RunData, config: GeneratorConfig, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` unaugmented samples from the validation subjects: images float32 (N, ...) and class maps uint8 (N, ...).

    Sample i is sample i of generator epoch `VALIDATION_EPOCH` (seed ``config.seed``), so every epoch,
    both families and every ensemble member see the same samples.

    Raises:
        ConfigError: `count` < 1.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"Expected training.validation_samples as an int >= 1. Received: validation_samples={count!r}")
    source = SampleSource(data.val, data.label_set, config, augment=False)
    samples = [source.sample(VALIDATION_EPOCH, index) for index in range(count)]
    images = np.stack([image for image, _ in samples])
    classes = np.stack([labels for _, labels in samples]).astype(np.uint8)
    return images, classes


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
