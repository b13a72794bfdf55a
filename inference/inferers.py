"""One predictor interface over every way a network reads a volume (in the spirit of MONAI's `Inferer`).

An `Inferer` applies one network to a whole conformed, normalised volume (I, J, K), RAS+: `scores`
gives its per-class output on every voxel, float32 (I, J, K, channels); `labels` gives class indices
(uint8) from a function that returns them per batch, where the reader allows it. `inferer_for` builds
the one a bundle's input contract asks for, with the settings of `brainseg_tf.config.InferenceConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from brainseg_tf.config import InferenceConfig
from brainseg_tf.preprocessing import InputSpec, SliceReader
from inference.patches import PatchSpec, predict_patches
from inference.predict import PredictFunction, PredictionPlan, SliceSpec, plan_prediction, predict_label_volume, predict_volume


class Inferer(Protocol):
    """Whole-volume prediction with one network, whatever its reader."""

    takes_labels: bool
    """Whether `labels` can be used: False where overlapping outputs must be blended as scores first."""

    def scores(self, image: np.ndarray, predict: PredictFunction) -> np.ndarray:
        """The network's output on every voxel, float32 (I, J, K, channels)."""
        ...

    def labels(self, image: np.ndarray, predict_labels: PredictFunction) -> np.ndarray:
        """Class indices on every voxel, uint8 (I, J, K), from a batch -> class indices function."""
        ...


@dataclass(frozen=True)
class SliceInferer:
    """A 2.5D network over the stacks of every slice in the content box (`inference.predict`)."""

    spec: SliceSpec
    batch_size: int
    workers: int
    takes_labels = True

    def __post_init__(self) -> None:
        _check_count("batch_size", self.batch_size)
        _check_count("workers", self.workers)

    def scores(self, image: np.ndarray, predict: PredictFunction) -> np.ndarray:
        return predict_volume(image, predict, self.spec, self.batch_size, self.workers)

    def labels(self, image: np.ndarray, predict_labels: PredictFunction) -> np.ndarray:
        return predict_label_volume(image, predict_labels, self.spec, self.batch_size, self.workers)

    def plan(self, image: np.ndarray) -> PredictionPlan:
        """What `scores` and `labels` compute for ``image`` (boxes, stacks, batches)."""
        return plan_prediction(image, self.spec, self.batch_size)


@dataclass(frozen=True)
class PatchInferer:
    """A 3D network over overlapping patches of the content box, blended by averaging (`inference.patches`)."""

    spec: PatchSpec
    batch_size: int
    takes_labels = False  # overlapping patches: their scores are averaged before any argmax

    def __post_init__(self) -> None:
        _check_count("batch_size", self.batch_size)

    def scores(self, image: np.ndarray, predict: PredictFunction) -> np.ndarray:
        return predict_patches(image, predict, self.spec, self.batch_size)

    def labels(self, image: np.ndarray, predict_labels: PredictFunction) -> np.ndarray:
        raise NotImplementedError("a patch network's labels are the argmax of its blended scores")


def inferer_for(input_spec: InputSpec, output_channels: int, settings: InferenceConfig) -> Inferer:
    """The inferer of a network with this input contract and ``output_channels`` outputs.

    Raises:
        ValueError: settings the inferer refuses, named in the message.
    """
    reader = input_spec.reader
    common = {"output_channels": output_channels, "background_threshold": settings.background_threshold, "margin": settings.margin}
    if isinstance(reader, SliceReader):
        spec = SliceSpec(reader.slice_axis, reader.context, input_spec.pad_multiple, **common)
        return SliceInferer(spec, settings.batch_size, settings.workers)
    patch_spec = PatchSpec(reader.patch_shape, input_spec.pad_multiple, overlap=settings.patch_overlap, **common)
    return PatchInferer(patch_spec, settings.patch_batch_size)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected {name} as an int >= 1. Received: {name}={value!r}")
