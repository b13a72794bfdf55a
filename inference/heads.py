"""A segmenter's head: its networks, and how their outputs become per-class scores and class indices.

`SoftmaxHead` holds one multi-class network; `SigmoidEnsembleHead` holds one single-class network per
foreground class (a member of a left/right pair may serve both classes of its pair: once on the volume, once on
its mirror) and fuses them by the library's one rule (`brainseg_tf.fusion`). Both give scores
(..., num_classes) and labels of the conformed volume; the `Segmenter` does not know which it holds.
A network whose output has an unexpected shape is reported as its bundle's fault (`BundleError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from brainseg_tf.bundle import BundleInfo, load_serving_function
from brainseg_tf.config import InferenceConfig
from brainseg_tf.errors import BundleError
from brainseg_tf.families import Family
from brainseg_tf.fusion import fused_labels, fused_scores
from brainseg_tf.regions import AtlasFrame, Region, mirrored_moments, region_box, subject_moments
from inference.argmax import argmax_labels
from inference.inferers import Inferer, inferer_for
from inference.predict import PredictFunction


@dataclass(frozen=True)
class Network:
    """One network of a head: its serving function, how it reads a volume, where it came from.

    Attributes:
        predict: float32 batch -> probabilities, the batch layout its inferer builds.
        inferer: how the network is applied to a whole volume.
        source: its bundle folder (named when the network misbehaves).
        class_index: the class of a single-class member; None for a multi-class network.
        predict_labels: optionally the argmax of ``predict`` as one function, batch -> uint8 class
            indices (`ServingFunction.labels`), for inferers that take labels; None otherwise.
        mirrored: the network reads the left/right mirror of the conformed image (RAS+: axis 0 reversed) and
            its output is mirrored back: a member of a left/right pair segmenting its partner (`class_index`).
        region: the atlas box an ensemble member reads (`brainseg_tf.regions`); None: the whole volume.
    """

    predict: PredictFunction
    inferer: Inferer
    source: Path
    class_index: int | None = None
    predict_labels: PredictFunction | None = None
    mirrored: bool = False
    region: Region | None = None

    def scores(self, image: np.ndarray, box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """The network's output on every voxel of the conformed image, float32 (I, J, K, channels).

        With ``box`` (array slices of the image as the network reads it: mirrored when `mirrored`), only that box is
        read; the output is 0 outside it."""
        source = np.ascontiguousarray(image[::-1]) if self.mirrored else image
        if box is None:
            out = self._run(self.inferer.scores, source, self.predict)
        else:
            inside = self._run(self.inferer.scores, np.ascontiguousarray(source[box]), self.predict)
            out = np.zeros((*source.shape, inside.shape[-1]), dtype=inside.dtype)
            out[box] = inside
        return np.ascontiguousarray(out[::-1]) if self.mirrored else out

    def labels(self, image: np.ndarray, workers: int) -> np.ndarray:
        """Class indices uint8 (I, J, K): from ``predict_labels`` when there is one, else the argmax of `scores`."""
        if self.predict_labels is None:
            return argmax_labels(self.scores(image), workers)
        return self._run(self.inferer.labels, image, self.predict_labels)

    def _run(self, infer: Callable[[np.ndarray, PredictFunction], np.ndarray], image: np.ndarray, function: PredictFunction) -> np.ndarray:
        try:
            return infer(image, function)
        except ValueError as error:  # the inferers check every output's shape
            raise BundleError(self.source, f"the network's output does not fit its input contract ({' '.join(str(error).split())})") from None


class Head(Protocol):
    """What a `Segmenter` asks of its networks."""

    family: Family
    networks: tuple[Network, ...]

    def scores(self, image: np.ndarray) -> np.ndarray:
        """Per-class scores float32 (I, J, K, num_classes) of the conformed image; their argmax is `labels`."""
        ...

    def labels(self, image: np.ndarray) -> np.ndarray:
        """Class indices uint8 (I, J, K) of the conformed image."""
        ...


@dataclass(frozen=True)
class SoftmaxHead:
    """One multi-class network: its probabilities are the scores."""

    networks: tuple[Network]
    workers: int
    family = Family.MULTICLASS

    def __post_init__(self) -> None:
        if len(self.networks) != 1:
            raise ValueError(f"Expected one multi-class network. Received: {len(self.networks)} networks")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"Expected workers as an int >= 1. Received: workers={self.workers!r}")

    def scores(self, image: np.ndarray) -> np.ndarray:
        return self.networks[0].scores(image)

    def labels(self, image: np.ndarray) -> np.ndarray:
        return self.networks[0].labels(image, self.workers)


@dataclass(frozen=True)
class SigmoidEnsembleHead:
    """Single-class members fused by `brainseg_tf.fusion`: the most probable member's class above
    `FUSION_THRESHOLD`, background elsewhere."""

    networks: tuple[Network, ...]
    num_classes: int
    atlas_frame: AtlasFrame | None = None
    voxel_size: float = 1.0
    family = Family.SINGLE_CLASS

    def __post_init__(self) -> None:
        if not self.networks or any(network.class_index is None for network in self.networks):
            raise ValueError(f"Expected at least one single-class network, each with its class index. Received: {len(self.networks)} networks")
        if self.atlas_frame is None and any(network.region is not None for network in self.networks):
            raise ValueError("Expected the atlas frame of members with regions. Received: none")

    @property
    def class_indices(self) -> list[int]:
        return [int(network.class_index) for network in self.networks]  # type: ignore[arg-type]

    def scores(self, image: np.ndarray) -> np.ndarray:
        return fused_scores(self._member_scores(image), self.class_indices, self.num_classes)

    def labels(self, image: np.ndarray) -> np.ndarray:
        return fused_labels(self._member_scores(image), self.class_indices, self.num_classes)

    def _member_scores(self, image: np.ndarray) -> list[np.ndarray]:
        """Each member's output; a member with a region reads only its box, placed by the brain's moments (the image's
        nonzero voxels: the brain-blanked input), or the whole volume when there is too little brain to place it."""
        moments = None if self.atlas_frame is None else subject_moments(image, self.voxel_size)
        if moments is None:
            return [n.scores(image) for n in self.networks]
        frames = {False: moments, True: mirrored_moments(moments, image.shape, self.voxel_size)}
        outputs = []
        for network in self.networks:
            box = None if network.region is None else region_box(network.region, self.atlas_frame, frames[network.mirrored], self.voxel_size, image.shape)  # type: ignore[arg-type]
            if network.region is not None and box is None:
                outputs.append(np.zeros((*image.shape, 1), dtype=np.float32))  # its region misses the volume: nothing there
                continue
            outputs.append(network.scores(image, box))
        return outputs


def head_for(info: BundleInfo, settings: InferenceConfig) -> Head:
    """The head of a verified bundle (`brainseg_tf.bundle.read_bundle_info`), its networks loaded.

    Raises:
        BundleError: a lone single-class model (use the ensemble bundle that holds it), or a
            SavedModel without the expected signature.
    """
    if info.kind == "ensemble":
        members: list[Network] = []
        for member in info.members:
            network = dataclasses.replace(_network(member, 1, settings, member.class_index), region=member.region)
            members.append(network)
            if member.mirrored_class_index is not None:  # the same network on the mirrored volume: the partner class
                members.append(dataclasses.replace(network, class_index=member.mirrored_class_index, mirrored=True))
        return SigmoidEnsembleHead(tuple(members), info.label_set.num_classes, info.atlas_frame, float(info.input_spec.voxel_size))
    if info.family is Family.SINGLE_CLASS:
        raise BundleError(info.path, "a single single_class model is not a segmenter: use the ensemble bundle that holds it")
    return SoftmaxHead((_network(info, info.label_set.num_classes, settings),), settings.workers)


def _network(info: BundleInfo, output_channels: int, settings: InferenceConfig, class_index: int | None = None) -> Network:
    inferer = inferer_for(info.input_spec, output_channels, settings)
    serving = load_serving_function(info)
    takes_labels = output_channels > 1 and inferer.takes_labels
    return Network(serving, inferer, info.path, class_index, serving.labels if takes_labels else None)
