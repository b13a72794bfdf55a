"""`Segmenter`: a verified bundle's networks applied to a whole volume, result on the input's own grid.

The road one volume travels, one stage per module:

1. `brainseg_tf.io.load_image`: header checks, then the voxels as an `Image` with its affine;
1b. when the bundle holds a brain extractor (`inference.extraction`): the brain found, the image
   blanked outside the mask grown by a margin (the tissue networks were trained on brains alone),
   and, at the end, labels kept inside the brain mask only;
2. `InputSpec.prepare` (`brainseg_tf.preprocessing`, the bundle's input contract): RAS+ at the
   networks' voxel size, intensities normalised, and the inverse back to the input's grid;
3. the head (`inference.heads`): each network through its `Inferer` (`inference.inferers`), one
   softmax network or single-class members fused by the library's rule (`brainseg_tf.fusion`);
4. back onto the input's grid: labels by nearest neighbour when conform only reoriented (the argmax
   is voxelwise, so the labels are the same without per-class scores for the whole volume), else
   the scores linearly, then their argmax there; optional postprocessing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from brainseg_tf.bundle import read_bundle_info
from brainseg_tf.config import InferenceConfig
from brainseg_tf.errors import ImageError, VolumeError
from brainseg_tf.io import Image, LabelMap, Volume, load_image
from brainseg_tf.labels import LabelSet
from brainseg_tf.preprocessing import InputSpec, PreparedImage
from inference.argmax import argmax_labels
from inference.extraction import BrainExtraction, BrainExtractor
from inference.heads import Head, head_for
from inference.postprocess import keep_largest_components
from inference.qc import QcVerdict, assess

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The result for one volume, on the input's own grid.

    Attributes:
        labels: class indices (uint8) with the input's shape and affine.
        scores: per-class probabilities float32 (I, J, K, num_classes) on the input grid, when
            asked for (``segment(..., with_scores=True)``); None otherwise.
        label_set: names and stored values of the classes.
        seconds: wall time from the loaded image to the labels.
        brain: the brain extraction the labels were confined to; None for a bundle without extractor.
        qc: the input QC verdict (`inference.qc`): whether to trust these labels.
    """

    labels: LabelMap
    scores: Image | None
    label_set: LabelSet
    seconds: float
    brain: BrainExtraction | None = None
    qc: QcVerdict | None = None

    def label_values(self) -> LabelMap:
        """The label map as stored label values (e.g. FreeSurfer IDs), int32, same grid."""
        return self.labels.with_array(self.label_set.to_values(self.labels.array))


class Segmenter:
    """Segments volumes with a bundle's head: one multi-class network, or a fused ensemble of single-class ones.

    Build it with `Segmenter.from_bundle`; the constructor takes a ready head (tests use stand-ins).

    Args:
        head: the networks and how their outputs become scores and labels.
        label_set: the classes, background first.
        input_spec: the input contract every network of the head shares.
        settings: how the work is cut up (workers for the final argmax; the head's inferers hold the rest).
        extractor: the brain extraction run first, when the bundle holds one.
    """

    def __init__(
        self,
        head: Head,
        label_set: LabelSet,
        input_spec: InputSpec,
        settings: InferenceConfig = InferenceConfig(),
        extractor: BrainExtractor | None = None,
    ) -> None:
        if settings.workers < 1:
            raise ValueError(f"Expected inference.workers >= 1. Received: workers={settings.workers}")
        self.head = head
        self.label_set = label_set
        self.input_spec = input_spec
        self.settings = settings
        self.extractor = extractor

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], settings: InferenceConfig = InferenceConfig()) -> Segmenter:
        """Verify a bundle's sha256 manifest (members included), then load each SavedModel signature.

        Nothing in the bundle is deserialised before the manifest is checked; the `.keras` files are
        not loaded at all (the serving signature needs TensorFlow only).

        Raises:
            BundleError: the bundle fails verification, or cannot segment on its own (a lone member).
            ValueError: settings the inferers refuse.
        """
        info = read_bundle_info(path)
        head = head_for(info, settings)
        extractor = None if info.brain_extractor is None else BrainExtractor.from_info(info.brain_extractor, settings)
        logger.info("loaded %s bundle %s (%d network%s%s)", info.family.value, info.path.name, len(head.networks),
                    "s" * (len(head.networks) > 1), ", brain extraction first" if extractor else "")
        return cls(head, info.label_set, info.input_spec, settings, extractor)

    @property
    def family(self) -> str:
        """The head's family, as bundle.json names it."""
        return self.head.family.value

    def segment_file(self, path: str | os.PathLike[str], largest_component: bool = False, with_scores: bool = False) -> tuple[Image, Segmentation]:
        """Load an image (header checks first, `PreprocessConfig.max_voxels`) and segment it (see `segment`).

        Returns:
            (the loaded image, its segmentation).

        Raises:
            VolumeError: ``"<path>: <problem>"`` for unreadable, malformed or contrast-free images.
            BundleError: the bundle's networks misbehave (the model's fault, not the scan's).
        """
        image = load_image(path)  # the header limit: PreprocessConfig.max_voxels
        try:
            return image, self.segment(image, largest_component, with_scores)
        except ImageError as error:
            raise VolumeError(path, str(error)) from None

    def segment(self, image: Image, largest_component: bool = False, with_scores: bool = False) -> Segmentation:
        """Segment an in-memory image (3D, any orientation and voxel size).

        Args:
            image: the T1 volume with its affine.
            largest_component: keep only the largest connected component of each class
                (voxels removed go to their next most probable class).
            with_scores: also return the per-class scores on the input grid (`Segmentation.scores`).

        Raises:
            ImageError: not a 3D image, an image without contrast, or one the QC refuses (no brain found).
            BundleError: a network's output has an unexpected shape.
        """
        start = time.perf_counter()
        _check_3d(image)
        brain = None if self.extractor is None else self.extractor.extract(Image(image.array, image.affine))
        if brain is not None and brain.volume_ml < self.settings.qc.min_brain_ml:
            raise ImageError(f"no brain found ({brain.volume_ml:.0f} mL of brain, at least {self.settings.qc.min_brain_ml:.0f} mL expected): is this a head MRI?")
        prepared = self._prepare(image if brain is None else _blanked_outside(image, brain))
        scores = None
        if prepared.inverse.only_reorients and not (with_scores or largest_component):
            labels = prepared.inverse(self.head.labels(prepared.array), "nearest")
            if brain is not None:
                labels = LabelMap(np.where(brain.mask.array > 0, labels.array, 0).astype(np.uint8), labels.affine)
        else:
            scores = prepared.inverse(self.head.scores(prepared.array), "linear")
            if brain is not None:
                scores = Image(_background_outside(scores.array, brain.mask.array), scores.affine)
            labels_array = argmax_labels(scores.array, self.settings.workers)
            if largest_component:
                labels_array = keep_largest_components(labels_array, scores.array, self.label_set.foreground_classes)
            labels = LabelMap(labels_array, image.affine)
        verdict = assess(image, labels, brain, self.settings.qc)
        if verdict.status == "fail":
            raise ImageError(verdict.summary())
        seconds = time.perf_counter() - start
        return Segmentation(labels, scores if with_scores else None, self.label_set, seconds, brain, verdict)  # type: ignore[arg-type]

    def _prepare(self, image: Volume) -> PreparedImage:
        try:
            return self.input_spec.prepare(Image(image.array, image.affine))
        except ValueError as error:  # e.g. a constant image: nothing to normalise
            raise ImageError(str(error)) from None


def _check_3d(image: Volume) -> None:
    if image.array.ndim != 3:
        raise ImageError(f"Expected a 3D image. Received: shape={image.array.shape}")


def _blanked_outside(image: Volume, brain: BrainExtraction) -> Image:
    """The image with every voxel outside the brain's shown region set to 0 (what the tissue networks know)."""
    return Image(np.where(brain.shown.array > 0, image.array, 0).astype(np.float32), image.affine)


def _background_outside(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scores (..., classes) with every voxel outside ``mask`` certain background (class 0)."""
    outside = mask == 0
    scores = scores.copy()
    scores[outside] = 0.0
    scores[outside, 0] = 1.0
    return scores

