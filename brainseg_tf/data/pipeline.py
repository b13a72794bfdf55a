"""The one data generator both model families share: seeded numpy samples wrapped in a `tf.data.Dataset`.

Sample ``i`` of epoch ``e`` is a pure function of ``(config.seed, e, i)``: its random generator is
``np.random.default_rng([config.seed, e, i])``, used in this order: subject, crop centre, then
(with augmentation) rotation and scale, flip, gamma, intensity scale and noise. Nothing about
the sample depends on the target encoding, so a softmax dataset and a ``sigmoid(k)`` dataset
built with the same seed yield identical inputs, and sigmoid targets equal softmax targets[..., k:k+1].

Epochs. ``make_dataset(..., epoch=e)`` yields epoch ``e`` once: ``steps_per_epoch(config)``
batches. ``make_dataset(..., epoch=e, repeat=True)`` yields epochs e, e+1, ... without end, and
its n-th block of ``steps_per_epoch(config)`` batches equals ``make_dataset(..., epoch=e + n)``.
Use it with keras as ``model.fit(dataset, epochs=E, steps_per_epoch=steps_per_epoch(config))``:
every keras epoch then sees a freshly drawn generator epoch. When ``samples_per_epoch`` is not
a multiple of ``batch_size``, the last incomplete batch of each epoch is never drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import tensorflow as tf

from brainseg_tf.config import GeneratorConfig
from brainseg_tf.data.augmentation import adjust_intensity, check_augment_config, draw_augmentation, flip_axes, flip_left_right
from brainseg_tf.data.encoding import TargetEncoding
from brainseg_tf.data.sampling import Centre, SubjectSampler, check_generator_config
from brainseg_tf.errors import ConfigError
from brainseg_tf.labels import LabelSet

if TYPE_CHECKING:
    from brainseg_tf.datasets.cache import Subject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    """Shapes of one sample, without the batch axis.

    Attributes:
        input_shape: (H, W, C) for slices, (D, H, W, 1) for patches.
        target_shape: input's spatial shape plus the encoding's channels (num_classes or 1).
    """

    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]


def describe_sample_spec(config: GeneratorConfig, label_set: LabelSet, encoding: TargetEncoding) -> SampleSpec:
    """Input and target shapes of one sample (what a model built for this generator must accept).

    Raises:
        ConfigError: invalid generator settings, or an encoding that does not fit the label set.
    """
    check_generator_config(config)
    spatial = tuple(config.slice_shape) if config.mode == "slices" else tuple(config.patch_shape)
    return SampleSpec(
        input_shape=(*spatial, config.channels),
        target_shape=(*spatial, encoding.channels(label_set.num_classes)),
    )


def steps_per_epoch(config: GeneratorConfig) -> int:
    """Batches in one generator epoch: ``samples_per_epoch // batch_size`` (incomplete batches are dropped)."""
    return config.samples_per_epoch // config.batch_size


def check_pipeline_config(config: GeneratorConfig) -> None:
    """Check every generator setting, batching included.

    Raises:
        ConfigError: a setting outside its accepted range, named in the message.
    """
    check_generator_config(config)
    check_augment_config(config.augment)
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise ConfigError(f"Expected generator.batch_size >= 1. Received: batch_size={config.batch_size!r}")
    if not isinstance(config.samples_per_epoch, int) or config.samples_per_epoch < config.batch_size:
        raise ConfigError(
            f"Expected generator.samples_per_epoch >= batch_size ({config.batch_size}). "
            f"Received: samples_per_epoch={config.samples_per_epoch!r}"
        )
    if isinstance(config.batches_per_head, bool) or not isinstance(config.batches_per_head, int) or config.batches_per_head < 1:
        raise ConfigError(f"Expected generator.batches_per_head as an int >= 1. Received: batches_per_head={config.batches_per_head!r}")
    if config.parallel_calls != -1 and config.parallel_calls < 1:
        raise ConfigError(
            f"Expected generator.parallel_calls >= 1, or -1 for autotune. Received: parallel_calls={config.parallel_calls!r}"
        )
    if config.prefetch_batches != -1 and config.prefetch_batches < 0:
        raise ConfigError(
            "Expected generator.prefetch_batches >= 0, or -1 for autotune. "
            f"Received: prefetch_batches={config.prefetch_batches!r}"
        )


class BatchSource(Protocol):
    """Anything that draws one batch of numpy samples by stream position (see `SampleSource.batch`)."""

    def batch(self, first_epoch: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class SampleSource:
    """Draws numpy samples by (epoch, index): the generator without tf.data and without target encoding.

    Args:
        subjects: in-memory subjects to sample from.
        label_set: their label set (number of classes, left/right pairs).
        config: generator settings.
        augment: apply `config.augment`; False reads exact crops (validation).
        focus: foreground centres only on these classes (`focus_classes`); None: any class.
        sampler: a `SubjectSampler` already built over ``subjects`` with ``config`` (`shared_sampler`), so that sources of
            several networks share its copies of the subjects; None builds one.
    """

    def __init__(
        self, subjects: Sequence[Subject], label_set: LabelSet, config: GeneratorConfig, *, augment: bool = True,
        focus: tuple[int, ...] | None = None, sampler: SubjectSampler | None = None,
    ) -> None:
        check_pipeline_config(config)
        self.config = config
        self.augment = augment
        self.focus = focus
        if sampler is not None and (sampler.config != config or len(sampler.subjects) != len(subjects)
                                    or any(a is not b for a, b in zip(sampler.subjects, subjects))):
            raise ValueError("Expected a sampler built over these subjects with this generator config. Received: another one")
        self.sampler = sampler or SubjectSampler(subjects, label_set.num_classes, config)
        self.permutation = label_set.flip_permutation()
        self.flip_axes = flip_axes(config.mode, config.slice_axis)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        """The random generator of sample `index` of `epoch`."""
        return np.random.default_rng([self.config.seed, int(epoch), int(index)])

    def location(self, epoch: int, index: int) -> tuple[int, Centre]:
        """Subject position and crop centre of a sample (the first draws of its generator)."""
        return self.sampler.locate(self.rng(epoch, index), self.focus)

    def sample(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One sample: image float32 (H, W, C) or (D, H, W, 1), labels int32 (H, W) or (D, H, W)."""
        rng = self.rng(epoch, index)
        number, centre = self.sampler.locate(rng, self.focus)
        if not self.augment:
            image, labels = self.sampler.extract(number, centre)
            return image, labels.astype(np.int32)
        augmentation = draw_augmentation(rng, self.config.augment, self.sampler.spatial_ndim)
        image, labels = self.sampler.extract(number, centre, augmentation.matrix)
        if augmentation.flip:
            image, labels = flip_left_right(image, labels, self.flip_axes, self.permutation)
        image = adjust_intensity(image, rng, augmentation, self.config.augment.noise_std)
        return image, labels.astype(np.int32)

    def batch(self, first_epoch: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stack the samples at stream `positions`; position p is sample ``p % n`` of epoch ``first_epoch + p // n``,
        with n = ``steps_per_epoch * batch_size``."""
        per_epoch = steps_per_epoch(self.config) * self.config.batch_size
        samples = [self.sample(first_epoch + int(p) // per_epoch, int(p) % per_epoch) for p in positions]
        return np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])


def focus_classes(label_set: LabelSet, config: GeneratorConfig, encoding: TargetEncoding) -> tuple[int, ...] | None:
    """The classes a network's foreground samples centre on: with ``generator.centre_on`` "own class", a single-class
    network's class and its left/right partner (the flip augmentation turns the partner into its class); None otherwise
    (any class, every network the same samples).

    Raises:
        ConfigError: an unknown ``centre_on``.
    """
    if config.centre_on not in ("any class", "own class"):
        raise ConfigError(f"Expected generator.centre_on 'any class' or 'own class'. Received: {config.centre_on!r}")
    if config.centre_on == "any class" or encoding.kind != "sigmoid" or encoding.class_index is None:
        return None
    partner = label_set.lr_partners().get(encoding.class_index)
    return (encoding.class_index,) if partner is None else (encoding.class_index, partner)


def make_dataset(
    subjects: Sequence[Subject],
    label_set: LabelSet,
    config: GeneratorConfig,
    encoding: TargetEncoding,
    *,
    augment: bool = True,
    epoch: int = 0,
    repeat: bool = False,
    sampler: SubjectSampler | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, targets) for either model family; see the module docstring for seeding and epochs.

    Args:
        subjects: in-memory subjects (see `brainseg_tf.datasets.cache.read_subjects`).
        label_set: the subjects' label set.
        config: generator settings.
        encoding: `TargetEncoding.softmax()` or `TargetEncoding.sigmoid(k)`.
        augment: apply `config.augment`; False for validation (exact crops).
        epoch: the (first) epoch drawn, >= 0.
        repeat: draw epochs ``epoch, epoch + 1, ...`` without end (for keras ``fit`` with ``steps_per_epoch``).
        sampler: the subjects' `SubjectSampler` shared between datasets (see `SampleSource`). TensorFlow keeps a
            dataset's Python source alive as long as the process (``tf.numpy_function``), so a run that builds one
            dataset per network (an ensemble) must share it: each sampler holds a copy of every subject (about 2 GB for
            20 subjects at 1 mm; measured, 18 members in one process ran out of 24 GB).

    Returns:
        Dataset of float32 ``inputs`` (B, H, W, C) or (B, D, H, W, 1) and float32 ``targets``
        (B, H, W, K|1) or (B, D, H, W, K|1), with static shapes.

    Raises:
        ConfigError: invalid settings or an encoding that does not fit the label set.
        DatasetError: no subjects, or class indices outside the label set.
    """
    source = SampleSource(subjects, label_set, config, augment=augment, focus=focus_classes(label_set, config, encoding), sampler=sampler)
    dataset = dataset_from_source(source, label_set, config, encoding, epoch=epoch, repeat=repeat)
    logger.info(
        "generator: %d subjects, %s mode, %s targets, %d batches of %d per epoch%s",
        len(subjects), config.mode, encoding.name, steps_per_epoch(config), config.batch_size, ", repeating" if repeat else "",
    )
    return dataset


def dataset_from_source(
    source: BatchSource, label_set: LabelSet, config: GeneratorConfig, encoding: TargetEncoding, *, epoch: int = 0, repeat: bool = False
) -> tf.data.Dataset:
    """The tf.data wrapper every source shares: stream positions in batches, drawn by ``source.batch``, encoded.

    Raises:
        ConfigError: a bad epoch, or an encoding that does not fit the label set.
    """
    if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
        raise ConfigError(f"Expected epoch as an integer >= 0. Received: epoch={epoch!r}")
    spec = describe_sample_spec(config, label_set, encoding)
    batch_size, num_classes = config.batch_size, label_set.num_classes
    positions = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(steps_per_epoch(config) * batch_size)
    positions = positions.batch(batch_size, drop_remainder=True)

    def draw(batch_positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(lambda p: source.batch(int(epoch), p), [batch_positions], (tf.float32, tf.int32))
        images.set_shape((batch_size, *spec.input_shape))
        labels.set_shape((batch_size, *spec.input_shape[:-1]))
        return images, encoding.encode(labels, num_classes)

    dataset = positions.map(draw, num_parallel_calls=_autotune(config.parallel_calls), deterministic=True)
    if config.prefetch_batches:
        dataset = dataset.prefetch(_autotune(config.prefetch_batches))
    return dataset


def _autotune(value: int) -> int:
    return tf.data.AUTOTUNE if value == -1 else value
