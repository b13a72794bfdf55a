"""`Segmenter`: a verified bundle's networks applied to a whole volume, result on the input's own grid.

The road one volume travels: header checks and loading (`brainseg_tf.io`), conform to the bundle's
RAS+ grid and voxel size (`brainseg_tf.geometry`), intensity normalisation, batched slice
prediction (`inference.predict`), fusion of ensemble members (`inference.fusion`), per-class scores
resampled linearly back onto the input grid, argmax there, then optional postprocessing.

When conform did not resample (the input is at the networks' voxel size, in any orientation) and
neither the scores nor postprocessing are asked for, the labels are taken on the conformed grid and
only reoriented back: the same labels, since the argmax is voxelwise, without per-class scores for
the whole volume. A multi-class slice network then takes the argmax inside TensorFlow.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainseg_tf.bundle import BundleInfo, load_serving_function, read_bundle_info
from brainseg_tf.errors import BundleError, VolumeError
from brainseg_tf.geometry import conform
from brainseg_tf.intensity import normalize_intensity
from brainseg_tf.io import DEFAULT_MAX_VOXELS, Volume, load_image
from brainseg_tf.labels import LabelSet
from inference.fusion import fused_labels, fused_scores, softmax_labels
from inference.patches import PatchSpec, predict_patches
from inference.postprocess import keep_largest_components
from inference.predict import PredictFunction, SliceSpec, predict_label_volume, predict_volume

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16  # slices per call (docs/benchmarks.md)
DEFAULT_WORKERS = 3
"""Prediction calls in flight at once, and blocks of the final argmax taken at once (docs/benchmarks.md)."""
PATCH_BATCH_SIZE = 2  # 3D patches are ~100x the voxels of a slice: a few per call bound the memory
ENSEMBLE_THRESHOLD = 0.5
"""The fusion rule's threshold that the ensemble's scores encode (`inference.fusion.fused_scores`)."""
SHARED_PREPROCESSING = ("orientation", "voxel_size", "lower_percentile", "upper_percentile")
"""input_spec keys every network of one segmenter must agree on: they share one conformed image."""


@dataclass(frozen=True)
class Network:
    """One network of a segmenter: its serving function, how it reads a volume, the class it segments.

    Attributes:
        predict: float32 batch (B, H, W, C) -> probabilities (B, H, W, K) for a 2.5D slice network,
            (B, D, H, W, 1) -> (B, D, H, W, K) for a 3D patch network.
        spec: how the network reads a volume (from the bundle's input_spec).
        class_index: the class of a single-class member; None for a multi-class network.
        predict_labels: for a multi-class network, optionally the argmax of ``predict`` as one
            function, batch -> class indices uint8 (B, H, W) (e.g. `ServingFunction.labels`); without
            it, the argmax is taken in numpy.
    """

    predict: PredictFunction
    spec: SliceSpec | PatchSpec
    class_index: int | None = None
    predict_labels: PredictFunction | None = None


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The result for one volume, on the input's own grid.

    Attributes:
        labels: class indices (uint8) with the input's shape and affine.
        scores: per-class probabilities float32 (I, J, K, num_classes) on the input grid, when
            asked for (``segment(..., with_scores=True)``); None otherwise.
        label_set: names and stored values of the classes.
        seconds: wall time from the loaded image to the labels.
    """

    labels: Volume
    scores: Volume | None
    label_set: LabelSet
    seconds: float

    def label_values(self) -> Volume:
        """The label map as stored label values (e.g. FreeSurfer IDs), int32, same grid."""
        return self.labels.with_array(self.label_set.to_values(self.labels.array))


class Segmenter:
    """Segments volumes with a multi-class network or a fused ensemble of single-class networks.

    Build it with `Segmenter.from_bundle`; the constructor takes ready networks (tests use stand-ins).

    Args:
        networks: one multi-class network, or one single-class network per foreground class used.
        label_set: the classes, background first.
        input_spec: the bundle's input_spec (shared preprocessing of every network).
        family: ``"multiclass"`` or ``"single_class"``.
        batch_size: slices per prediction call of a 2.5D network (fixed, so the function is traced
            once); 3D patch networks take `PATCH_BATCH_SIZE` patches per call.
        workers: prediction calls of a 2.5D network in flight at once, and blocks of the argmax
            taken at once; 1 runs everything in the calling thread.

    An ensemble's labels follow the fusion rule at `ENSEMBLE_THRESHOLD`: the most probable member's
    class, background where every member is below 0.5.
    """

    def __init__(
        self,
        networks: list[Network],
        label_set: LabelSet,
        input_spec: dict[str, Any],
        family: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        if family not in ("multiclass", "single_class"):
            raise ValueError(f"Expected family 'multiclass' or 'single_class'. Received: family={family!r}")
        if not networks or (family == "multiclass" and len(networks) != 1):
            raise ValueError(f"Expected one multi-class network or at least one single-class member. Received: {len(networks)} for {family}")
        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
        if workers < 1:
            raise ValueError(f"Expected workers >= 1. Received: workers={workers}")
        self.networks = list(networks)
        self.label_set = label_set
        self.input_spec = dict(input_spec)
        self.family = family
        self.batch_size = batch_size
        self.workers = workers

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], batch_size: int = DEFAULT_BATCH_SIZE, workers: int = DEFAULT_WORKERS) -> Segmenter:
        """Verify a bundle's sha256 manifest (members included), then load each SavedModel signature.

        Nothing in the bundle is deserialised before the manifest is checked; the `.keras` files are
        not loaded at all (the serving signature needs TensorFlow only).

        Raises:
            BundleError: the bundle fails verification, or uses an input mode inference cannot run.
        """
        info = read_bundle_info(path)
        if info.kind == "model" and info.family == "multiclass":
            networks = [_network(info, info.label_set.num_classes)]
        elif info.kind == "ensemble":
            _check_shared_preprocessing(info)
            networks = [_network(member, 1, member.class_index) for member in info.members]
        else:
            raise BundleError(info.path, "a single single_class model is not a segmenter: use the ensemble bundle that holds it")
        logger.info("loaded %s bundle %s (%d network%s)", info.family, info.path.name, len(networks), "s" * (len(networks) > 1))
        return cls(networks, info.label_set, info.input_spec, info.family, batch_size, workers)

    @property
    def voxel_size(self) -> float:
        """The isotropic voxel size (mm) the networks work at."""
        return float(self.input_spec["voxel_size"])

    def segment_file(
        self, path: str | os.PathLike[str], largest_component: bool = False, max_voxels: int = DEFAULT_MAX_VOXELS, with_scores: bool = False
    ) -> tuple[Volume, Segmentation]:
        """Load an image (header checks first) and segment it (see `segment`).

        Returns:
            (the loaded image, its segmentation).

        Raises:
            VolumeError: ``"<path>: <problem>"`` for unreadable, malformed or contrast-free images.
        """
        image = load_image(path, max_voxels)
        try:
            return image, self.segment(image, largest_component, with_scores)
        except ValueError as error:  # e.g. a constant image: nothing to normalise
            raise VolumeError(path, str(error)) from None

    def segment(self, image: Volume, largest_component: bool = False, with_scores: bool = False) -> Segmentation:
        """Segment an in-memory image (3D, any orientation and voxel size).

        Args:
            image: the T1 volume with its affine.
            largest_component: keep only the largest connected component of each class
                (voxels removed go to their next most probable class).
            with_scores: also return the per-class scores on the input grid (`Segmentation.scores`).

        Raises:
            ValueError: not a 3D image, or an image without contrast.
        """
        if image.array.ndim != 3:
            raise ValueError(f"Expected a 3D image. Received: shape={image.array.shape}")
        start = time.perf_counter()
        conformed, inverse = conform(image, self.voxel_size, "linear")
        normalised = normalize_intensity(conformed.array, self.input_spec["lower_percentile"], self.input_spec["upper_percentile"])
        if inverse.only_reorients and not (with_scores or largest_component):
            labels = inverse(self._labels(normalised), "nearest").array
            return Segmentation(image.with_array(labels), None, self.label_set, time.perf_counter() - start)
        on_input = inverse(self._scores(normalised), "linear").array
        labels = softmax_labels(on_input, self.workers)
        if largest_component:
            labels = keep_largest_components(labels, on_input, self.label_set.foreground_classes)
        scores = image.with_array(on_input) if with_scores else None
        return Segmentation(image.with_array(labels), scores, self.label_set, time.perf_counter() - start)

    def _labels(self, normalised: np.ndarray) -> np.ndarray:
        """Class indices on the conformed grid, uint8: the argmax of `_scores`, without building them."""
        if self.family == "multiclass":
            network = self.networks[0]
            if network.predict_labels is not None and isinstance(network.spec, SliceSpec):  # (a patch network blends probabilities)
                return predict_label_volume(normalised, network.predict_labels, network.spec, self.batch_size, self.workers)
            return softmax_labels(self._predict(normalised, network), self.workers)
        outputs = [self._predict(normalised, n) for n in self.networks]
        classes = [int(n.class_index) for n in self.networks]  # type: ignore[arg-type]
        return fused_labels(outputs, classes, self.label_set.num_classes)

    def _scores(self, normalised: np.ndarray) -> np.ndarray:
        """Per-class scores on the conformed grid: softmax probabilities, or fused member probabilities."""
        outputs = [self._predict(normalised, n) for n in self.networks]
        if self.family == "multiclass":
            return outputs[0]
        classes = [int(n.class_index) for n in self.networks]  # type: ignore[arg-type]
        return fused_scores(outputs, classes, self.label_set.num_classes)

    def _predict(self, normalised: np.ndarray, network: Network) -> np.ndarray:
        if isinstance(network.spec, PatchSpec):
            return predict_patches(normalised, network.predict, network.spec, PATCH_BATCH_SIZE)
        return predict_volume(normalised, network.predict, network.spec, self.batch_size, self.workers)


def reading_spec(input_spec: dict[str, Any], output_channels: int) -> SliceSpec | PatchSpec:
    """How a network reads a volume, from its bundle's input_spec: `SliceSpec` or `PatchSpec`.

    Raises:
        ValueError: an unknown mode, or values the spec refuses.
    """
    mode = input_spec.get("mode")
    if mode == "slices":
        return SliceSpec(int(input_spec["slice_axis"]), int(input_spec["context"]), int(input_spec["pad_multiple"]), output_channels)
    if mode == "patches":
        return PatchSpec(tuple(input_spec["patch_shape"]), int(input_spec["pad_multiple"]), output_channels)
    raise ValueError(f"Expected input_spec mode 'slices' or 'patches'. Received: mode={mode!r}")


def _network(info: BundleInfo, output_channels: int, class_index: int | None = None) -> Network:
    try:
        spec = reading_spec(info.input_spec, output_channels)
    except (ValueError, TypeError, KeyError) as error:
        raise BundleError(info.path, f"unusable input_spec ({error})") from None
    serving = load_serving_function(info.path)
    takes_labels = output_channels > 1 and isinstance(spec, SliceSpec)  # patches overlap: their probabilities are blended first
    return Network(serving, spec, class_index, serving.labels if takes_labels else None)


def _check_shared_preprocessing(info: BundleInfo) -> None:
    for member in info.members:
        for key in SHARED_PREPROCESSING:
            if member.input_spec[key] != info.input_spec[key]:
                raise BundleError(member.path, f"input_spec {key} {member.input_spec[key]!r} differs from the ensemble's {info.input_spec[key]!r}")

