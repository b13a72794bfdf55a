"""Batches drawn from fresh synthetic heads: every batch from a new head grown around a training brain.

The real-heads engine (`brainseg_tf.datasets.synthetic_heads`) behind the generator's sampling: batch
``b`` of epoch ``e`` picks a brain among the training subjects and grows and images one head with
``np.random.default_rng([seed, e, b, HEAD_STREAM])`` (with ``generator.batches_per_head`` k, batches
``b`` share head ``b // k``, drawn once; the brain scaled by a random ``heads.brain_scale`` when one is
set, each axis by up to ``heads.brain_aspect_jitter`` more); the head is prepared by the networks' input contract (`brainseg_tf.preprocessing.Preprocessing`:
RAS+ at its voxel size, intensities normalised),
then its samples are cut, augmented and seeded exactly as `brainseg_tf.data.pipeline.SampleSource`
does for cached subjects (sample ``i`` of epoch ``e`` from ``(seed, e, i)``). Targets are the head's
brain tissue classes (``TISSUE``: everything outside the brain is background), its brain mask
(``BRAIN``) or, around a structures brain, its ``STRUCTURES`` classes, so the target encoding stays the only switch between the model families.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Literal

import numpy as np
import tensorflow as tf

from brainseg_tf.config import GeneratorConfig, HeadConfig
from brainseg_tf.data.encoding import TargetEncoding
from brainseg_tf.data.sampling import SubjectSampler
from brainseg_tf.data.pipeline import SampleSource, check_pipeline_config, dataset_from_source, focus_classes, steps_per_epoch
from brainseg_tf.datasets.heads import head_brain_mask, head_to_tissue
from brainseg_tf.datasets.synthetic_heads import child_head, on_head_grid, scaled_brain, synthesize_head_subject, tissue_of_structure_classes
from brainseg_tf.errors import ConfigError, DatasetError
from brainseg_tf.io import LabelMap
from brainseg_tf.labels import BRAIN, STRUCTURES, TISSUE, LabelSet
from brainseg_tf.preprocessing import Preprocessing

if TYPE_CHECKING:
    from brainseg_tf.datasets.cache import Subject

logger = logging.getLogger(__name__)

HeadTarget = Literal["tissue", "brain", "structures"]
HEAD_TARGETS: dict[str, LabelSet] = {"tissue": TISSUE, "brain": BRAIN, "structures": STRUCTURES}
HEAD_STREAM = 7
"""Last entry of a head's seed: keeps head draws apart from the samples' ``(seed, epoch, index)`` streams."""
_HEADS_KEPT = 4
"""Heads a source keeps for the batches that share them (`GeneratorConfig.batches_per_head`): tf.data draws a few batches at once."""
MIX_STREAM = 2
"""Appended to a batch's head seed to choose its source (`MixedSource`), apart from the head's own draws."""
HEAD_AXIS_STREAM = 1
"""Appended to a head's seed for the batch's slice axis (``generator.random_slice_axis``), apart from the head's own draws."""


class HeadSource:
    """Draws batches by stream position, each batch from one fresh synthetic head (see the module docstring).

    Args:
        brains: training subjects on a RAS+ grid whose ``classes`` are ``TISSUE`` classes (the embedded cache's), or
            ``STRUCTURES`` classes for the ``structures`` target (the embedded structures cache's).
        config: generator settings, ``heads`` and ``synthesis`` included.
        preprocessing: the networks' recipe; heads are built at its voxel size.
        target: ``"tissue"`` (brain classes), ``"brain"`` (brain mask) or ``"structures"`` (the brains' structures,
            each imaged with a contrast of its own).
        augment: apply ``config.augment`` to each sample, as `SampleSource` does.

    Raises:
        DatasetError: no brains.
        ConfigError: invalid generator settings.
        ValueError: an unknown target.
    """

    def __init__(
        self, brains: Sequence[Subject], config: GeneratorConfig, preprocessing: Preprocessing, target: HeadTarget = "tissue", *, augment: bool = True
    ) -> None:
        check_pipeline_config(config)
        if not brains:
            raise DatasetError("Expected at least one brain to grow heads around. Received: none")
        if target not in HEAD_TARGETS:
            raise ValueError(f"Expected target in {sorted(HEAD_TARGETS)}. Received: target={target!r}")
        self.brains = tuple(brains)
        self.config = config
        self.preprocessing = preprocessing
        self.target = target
        self.label_set = HEAD_TARGETS[target]
        self.augment = augment
        self.focus: tuple[int, ...] | None = None  # foreground centres only on these classes (`focus_classes`)
        self._heads: dict[tuple[int, int], Future[Subject]] = {}  # the last few heads, so the batches sharing one draw it once
        self._lock = threading.Lock()

    def head(self, epoch: int, batch_index: int) -> Subject:
        """The prepared head of batch ``batch_index`` of ``epoch``: image in [0, 1], target classes, one grid.
        Batches ``k * batches_per_head`` to ``(k + 1) * batches_per_head - 1`` share head ``k``, drawn once."""
        key = (int(epoch), int(batch_index) // self.config.batches_per_head)
        with self._lock:
            pending = self._heads.get(key)
            owner = pending is None
            if owner:
                pending = self._heads[key] = Future()
                while len(self._heads) > _HEADS_KEPT:
                    self._heads.pop(next(iter(self._heads)))
        if owner:
            try:
                pending.set_result(self._draw_head(*key))
            except BaseException as error:
                pending.set_exception(error)
                with self._lock:
                    self._heads.pop(key, None)
        return pending.result()

    def _draw_head(self, epoch: int, head_index: int) -> Subject:
        from brainseg_tf.datasets.cache import Subject

        rng = self._rng(epoch, head_index)
        brain = self.brains[int(rng.integers(len(self.brains)))]
        brain_map = LabelMap(np.asarray(brain.classes, np.int32), brain.affine)
        brain_map, scale = _drawn_brain(brain_map, rng, self.config.heads)
        heads = child_head(self.config.heads, scale) if self.config.heads.child_layers else self.config.heads
        heads = _drawn_layers(heads, rng)
        generator = self.config if heads is self.config.heads else dataclasses.replace(self.config, heads=heads)
        grid = self.preprocessing.prepare_label_map(brain_map)
        if self.target == "structures":
            tissue = grid.with_array(tissue_of_structure_classes(grid.array))
            image, labels = synthesize_head_subject(tissue, rng, generator, structures=grid)
            targets = on_head_grid(grid, labels)
        else:
            image, labels = synthesize_head_subject(grid, rng, generator)
            targets = head_to_tissue(labels.array) if self.target == "tissue" else head_brain_mask(labels.array)
        prepared = self.preprocessing.prepare(image)
        return Subject(f"head-{epoch}-{head_index}-{brain.subject_id}", prepared.array, np.asarray(targets, np.uint8), labels.affine, "train")

    def batch(self, first_epoch: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The samples at stream ``positions`` (one batch, as `SampleSource.batch`), all cut from one head,
        along ``generator.slice_axis``, or along a random axis per batch with ``generator.random_slice_axis``."""
        epoch, batch_index = batch_position(self.config, first_epoch, positions)
        sampling = self.config
        if self.config.random_slice_axis and self.config.mode == "slices":
            axis = int(self._rng(epoch, batch_index, HEAD_AXIS_STREAM).integers(3))
            sampling = dataclasses.replace(self.config, slice_axis=axis)
        return SampleSource([self.head(epoch, batch_index)], self.label_set, sampling, augment=self.augment, focus=self.focus).batch(first_epoch, positions)

    def _rng(self, epoch: int, batch_index: int, stream: int = 0) -> np.random.Generator:
        return batch_rng(self.config.seed, epoch, batch_index, stream)


def _drawn_brain(brain: LabelMap, rng: np.random.Generator, config: HeadConfig) -> tuple[LabelMap, float]:
    """The brain at a size drawn from ``config.brain_scale`` (for a share ``brain_scale_probability`` of heads; the
    others keep size 1), each axis then changed by up to ``brain_aspect_jitter`` (relative), and that size (before the
    per-axis change); nothing is drawn for a setting left at its default, so older recipes keep their draws."""
    low, high = config.brain_scale
    scaled = config.brain_scale_probability >= 1.0 or bool(rng.uniform() < config.brain_scale_probability)
    size = float(rng.uniform(low, high)) if scaled and (high > low or low != 1.0) else 1.0
    factor: float | tuple[float, ...] = size
    if config.brain_aspect_jitter > 0:
        factor = tuple(size * (1.0 + rng.uniform(-config.brain_aspect_jitter, config.brain_aspect_jitter, 3)))
    return (brain if factor == 1.0 else scaled_brain(brain, factor)), size


def _drawn_layers(config: HeadConfig, rng: np.random.Generator) -> HeadConfig:
    """``config`` with its thickness scaled by a factor drawn from ``config.layer_scale``; nothing drawn at its default."""
    low, high = config.layer_scale
    if low == high == 1.0:
        return config
    return dataclasses.replace(config, thickness_scale=config.thickness_scale * float(rng.uniform(low, high)))


def batch_rng(seed: int, epoch: int, batch_index: int, stream: int = 0) -> np.random.Generator:
    """The generator of batch (or head) ``batch_index`` of ``epoch``: ``[seed, epoch, index, HEAD_STREAM]``, with
    ``stream`` appended when nonzero (`HEAD_AXIS_STREAM`, `MIX_STREAM`) so those draws stay apart from the head's."""
    key = [int(seed), int(epoch), int(batch_index), HEAD_STREAM]
    return np.random.default_rng([*key, int(stream)] if stream else key)


def batch_position(config: GeneratorConfig, first_epoch: int, positions: np.ndarray) -> tuple[int, int]:
    """(epoch, batch index within it) of the batch at stream ``positions`` (as `SampleSource.batch` counts them)."""
    per_epoch = steps_per_epoch(config) * config.batch_size
    first = int(positions[0])
    return first_epoch + first // per_epoch, (first % per_epoch) // config.batch_size


class MixedSource:
    """Each batch from synthetic heads with probability ``heads_fraction``, else from the cached subjects as they
    are; the choice is seeded by the batch's position (``[seed, epoch, batch, HEAD_STREAM, MIX_STREAM]``).

    Heads teach what real data cannot show (the tissue around the brain that extraction leaves, other sizes,
    resolutions and contrasts); the cached subjects keep a real scan's intensities and textures in view.

    Raises:
        ConfigError: ``heads_fraction`` outside [0, 1], or sources with different label sets or generator settings.
    """

    def __init__(self, heads: HeadSource, cached: SampleSource, cached_label_set: LabelSet, heads_fraction: float) -> None:
        if isinstance(heads_fraction, bool) or not isinstance(heads_fraction, (int, float)) or not 0 <= heads_fraction <= 1:
            raise ConfigError(f"Expected data.heads_fraction in [0, 1]. Received: {heads_fraction!r}")
        if cached_label_set.num_classes != heads.label_set.num_classes:
            raise ConfigError(f"Expected the cached subjects to hold the heads' targets ({heads.label_set.name}). "
                              f"Received: label set {cached_label_set.name!r}")
        if cached.config != heads.config:
            raise ConfigError("Expected one generator configuration for the heads and the cached subjects. Received: two")
        self.heads, self.cached, self.heads_fraction = heads, cached, float(heads_fraction)

    def from_heads(self, epoch: int, batch_index: int) -> bool:
        """Whether batch ``batch_index`` of ``epoch`` comes from the heads."""
        if self.heads_fraction >= 1:
            return True
        return bool(batch_rng(self.heads.config.seed, epoch, batch_index, MIX_STREAM).random() < self.heads_fraction)

    def batch(self, first_epoch: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The samples at stream ``positions`` (one batch, as `SampleSource.batch`), from one source."""
        epoch, batch_index = batch_position(self.heads.config, first_epoch, positions)
        source = self.heads if self.from_heads(epoch, batch_index) else self.cached
        return source.batch(first_epoch, positions)


def make_head_dataset(
    brains: Sequence[Subject],
    config: GeneratorConfig,
    preprocessing: Preprocessing,
    encoding: TargetEncoding,
    target: HeadTarget = "tissue",
    *,
    augment: bool = True,
    epoch: int = 0,
    repeat: bool = False,
    heads_fraction: float = 1.0,
    cached_label_set: LabelSet | None = None,
    cached_sampler: SubjectSampler | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, targets) from fresh synthetic heads, for either family (see `make_dataset`); with
    ``heads_fraction`` below 1 the other batches come from ``brains`` themselves, as cached (`MixedSource`;
    their ``cached_label_set`` must be the target's; ``cached_sampler`` shares their `SubjectSampler`, see `make_dataset`).

    Raises:
        ConfigError: invalid settings or an encoding that does not fit the target's label set.
        DatasetError: no brains.
    """
    heads = HeadSource(brains, config, preprocessing, target, augment=augment)
    heads.focus = focus_classes(heads.label_set, config, encoding)
    source: HeadSource | MixedSource = heads
    if heads_fraction < 1:
        if cached_label_set is None:
            raise ConfigError("Expected the cached subjects' label set with data.heads_fraction below 1. Received: none")
        cached = SampleSource(brains, cached_label_set, config, augment=augment, focus=focus_classes(cached_label_set, config, encoding),
                              sampler=cached_sampler)
        source = MixedSource(heads, cached, cached_label_set, heads_fraction)
    dataset = dataset_from_source(source, heads.label_set, config, encoding, epoch=epoch, repeat=repeat)
    logger.info("generator: fresh heads around %d brains for %.0f %% of the batches, %s targets (%s), %d batches of %d per epoch",
                len(brains), 100 * heads_fraction, target, encoding.name, steps_per_epoch(config), config.batch_size)
    return dataset
