"""Brain extraction, the stage both families share before their tissue networks (docs/real-heads.md, section 2).

A bundle's brain extractor (`brainseg_tf.bundle.extractor`) is one 2.5D network at a coarse voxel size
(2 mm: the whole head in one 128x128 slice). `BrainExtractor` runs it along the slice axes of
``InferenceConfig.extraction_axes`` (sagittal and coronal by default: one direction alone misses more, and
axial slices were the weakest on held-out heads) and averages the probabilities, keeps the largest
connected component with its holes filled, and brings the result back to the input's grid: a brain
probability (linear) and a mask (probability above `BRAIN_THRESHOLD`), plus the mask grown by a margin,
which is what the tissue networks are shown.

An input that arrives **already skull-stripped** is its own brain, not the networks': a stripping tool (BET, HD-BET,
SynthStrip, ROBEX, FreeSurfer's ``brain.mgz``) writes exact zeros outside what it keeps, and a network
trained mostly on whole heads under-segments such a brain (it takes the cortex next to the air for
scalp; docs/real-heads.md, section 2). `stripped_brain` recognises one: at least
``InferenceConfig.stripped_min_background`` of the voxels hold exactly the image's minimum, and the rest,
as its largest component with holes filled, is no larger than ``InferenceConfig.stripped_max_brain_ml``
(an adult's whole head with zeroed air is larger), and the networks do not agree on a brain inside it: a
child's whole head with zeroed air (as some scanners and defacing tools write it) is no larger than an
adult's brain, but on a whole head the networks' directions agree (Dice 0.89-0.95 on held-out synthetic
heads), on a stripped brain they do not (0.36-0.73), so a direction agreement of at least
``InferenceConfig.stripped_max_agreement`` keeps the networks' brain. A stripped input is then its
nonzero region, on the input's own grid.

Geometry: the extractor's arrays are RAS+ on its own conformed grid; everything it returns is on the
input's grid (shape and affine), like the segmentation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainseg_tf.bundle import BundleInfo, load_serving_function
from brainseg_tf.config import InferenceConfig
from brainseg_tf.errors import ConfigError, ImageError
from brainseg_tf.io import Image, LabelMap
from brainseg_tf.preprocessing import InputSpec, SliceReader
from inference.heads import Network
from inference.inferers import inferer_for

logger = logging.getLogger(__name__)

BRAIN_THRESHOLD = 0.5
"""A voxel is brain when the mean probability of the directions is strictly above this."""


@dataclass(frozen=True, eq=False)
class BrainExtraction:
    """The brain found in one image, on the image's own grid.

    Attributes:
        probability: mean brain probability of the directions, float32 in [0, 1], outside the kept
            component 0 (an `Image` with the input's shape and affine).
        mask: the brain, uint8 0/1 (probability above `BRAIN_THRESHOLD`, largest component, filled).
        shown: the mask grown by ``margin_mm``: the voxels the tissue networks see.
        direction_agreement: the lowest Dice between two directions' masks on the extractor's grid
            (1.0 with one direction); low when the directions disagree about where the brain is.
        components: connected components of the thresholded mean before the largest was kept.
        grid_image: the image as the extractor saw it (RAS+, its voxel size, normalised), for cheap QC measures.
        grid_mask: the kept component (filled) on that grid.
        grid_voxel_mm: that grid's voxel edge.
        already_stripped: the input arrived skull-stripped (`stripped_brain`): the mask is its nonzero
            region, no network ran, and ``direction_agreement`` is None.
    """

    probability: Image
    mask: LabelMap
    shown: LabelMap
    direction_agreement: float | None
    components: int
    grid_image: np.ndarray
    grid_mask: np.ndarray
    grid_voxel_mm: float
    already_stripped: bool = False

    @property
    def volume_ml(self) -> float:
        """The mask's volume, mL."""
        voxel = float(abs(np.linalg.det(self.mask.affine[:3, :3])))
        return float(np.count_nonzero(self.mask.array)) * voxel / 1000.0


class BrainExtractor:
    """A brain-mask network applied along one or several directions, fused and cleaned (module docstring).

    Args:
        networks: one `Network` per direction, each a single-channel sigmoid output.
        input_spec: the extractor's input contract (its voxel size and normalisation).
        margin_mm: how far the shown region reaches beyond the mask.
        stripped: when an input counts as already skull-stripped (`StrippedInput`); None: never.
    """

    def __init__(self, networks: tuple[Network, ...], input_spec: InputSpec, margin_mm: float, stripped: StrippedInput | None = None) -> None:
        if not networks:
            raise ValueError("Expected at least one brain-extraction network. Received: none")
        if not (math.isfinite(margin_mm) and margin_mm >= 0):
            raise ValueError(f"Expected margin_mm >= 0. Received: margin_mm={margin_mm!r}")
        self.networks = networks
        self.input_spec = input_spec
        self.margin_mm = float(margin_mm)
        self.stripped = stripped

    @classmethod
    def from_info(cls, info: BundleInfo, settings: InferenceConfig) -> BrainExtractor:
        """The extractor of a verified bundle: a slice network runs along each of ``settings.extraction_axes``, a patch
        network once.

        Raises:
            ConfigError: ``extraction_axes`` not distinct axes among 0, 1, 2.
        """
        axes = settings.extraction_axes
        if not (isinstance(axes, (tuple, list)) and axes and len(set(axes)) == len(axes)
                and all(isinstance(a, int) and not isinstance(a, bool) and a in (0, 1, 2) for a in axes)):
            raise ConfigError(f"Expected inference.extraction_axes as distinct axes among 0, 1, 2. Received: {axes!r}")
        serving = load_serving_function(info)
        spec = info.input_spec
        if isinstance(spec.reader, SliceReader):
            specs = [dataclasses.replace(spec, reader=SliceReader(axis, spec.reader.context)) for axis in axes]
        else:
            specs = [spec]
        networks = tuple(Network(serving, inferer_for(s, 1, settings), info.path) for s in specs)
        stripped = StrippedInput(settings.stripped_min_background, settings.stripped_max_brain_ml, settings.stripped_max_agreement)
        return cls(networks, spec, settings.brain_margin_mm, stripped)

    def extract(self, image: Image) -> BrainExtraction:
        """Find the brain in ``image`` (3D, any orientation and voxel size).

        Raises:
            ImageError: an image without contrast.
            BundleError: the network's output does not fit its input contract.
        """
        try:
            prepared = self.input_spec.prepare(image)
        except ValueError as error:
            raise ImageError(str(error)) from None
        rule = self.stripped
        found = None if rule is None else stripped_brain(image, rule)
        if found is not None and len(self.networks) < 2:
            return self._already_stripped(image, prepared.array, *found)
        directions = [network.scores(prepared.array)[..., 0] for network in self.networks]
        agreement = direction_agreement([d > BRAIN_THRESHOLD for d in directions])
        if found is not None and rule is not None:
            if agreement < rule.max_agreement:
                return self._already_stripped(image, prepared.array, *found)
            logger.info("exact zeros around the input, but the extractor's directions agree on a brain inside (%.2f): a whole head", agreement)
        mean = np.mean(directions, axis=0, dtype=np.float32)
        kept, components = largest_filled_component(mean > BRAIN_THRESHOLD)
        shown = grown(kept, self.margin_mm / self.input_spec.voxel_size)
        # Kept voxels above the threshold, the rest at or below it: thresholding after the linear resampling
        # gives the component's outline. Outside the shown box everything is "not brain", so only that box
        # of the input grid is resampled (a brain is a fraction of a full head's field of view).
        cleaned = np.where(kept, np.maximum(mean, BRAIN_THRESHOLD + 1e-3), np.minimum(mean, BRAIN_THRESHOLD)).clip(0.0, 1.0)
        back = prepared.inverse(np.stack([cleaned, shown], axis=-1).astype(np.float32), "linear", region=bounding_box(shown)).array
        mask = back[..., 0] > BRAIN_THRESHOLD
        probability = Image(np.where(mask, back[..., 0], 0.0).astype(np.float32), image.affine)
        shown_back = (back[..., 1] > 0.5) | mask
        logger.debug("brain extraction: %d component(s), direction agreement %.3f", components, agreement)
        return BrainExtraction(
            probability, LabelMap(mask.astype(np.uint8), image.affine), LabelMap(shown_back.astype(np.uint8), image.affine),
            agreement, components, prepared.array, kept, float(self.input_spec.voxel_size),
        )


    def _already_stripped(self, image: Image, grid_image: np.ndarray, mask: np.ndarray, components: int) -> BrainExtraction:
        """The extraction of an input that arrived skull-stripped: its nonzero region is the brain, and
        what the tissue networks are shown (nothing lies beyond it)."""
        labels = LabelMap(mask.astype(np.uint8), image.affine)
        grid_mask, _ = largest_filled_component(grid_image > 0)
        logger.info("input already skull-stripped (exact zeros around %.0f mL): its nonzero region is taken as the brain",
                    float(mask.sum()) * abs(float(np.linalg.det(image.affine[:3, :3]))) / 1000.0)
        return BrainExtraction(Image(mask.astype(np.float32), image.affine), labels, labels, None, components,
                               grid_image, grid_mask, float(self.input_spec.voxel_size), already_stripped=True)


@dataclass(frozen=True)
class StrippedInput:
    """When an input counts as already skull-stripped (module docstring; defaults in `InferenceConfig`).

    Attributes:
        min_background: share of voxels that must hold exactly the image's minimum, in (0, 1].
        max_brain_ml: the largest nonzero region, holes filled, that may be a brain, mL.
        max_agreement: with two or more extraction directions, the direction agreement (`direction_agreement`) from
            which the input is a whole head with zeroed air, whatever its zeros, in (0, 1].
    """

    min_background: float
    max_brain_ml: float
    max_agreement: float = 0.8

    def __post_init__(self) -> None:
        if not (0 < self.min_background <= 1):
            raise ValueError(f"Expected stripped_min_background in (0, 1]. Received: {self.min_background!r}")
        if not (math.isfinite(self.max_brain_ml) and self.max_brain_ml > 0):
            raise ValueError(f"Expected stripped_max_brain_ml > 0. Received: {self.max_brain_ml!r}")
        if not (0 < self.max_agreement <= 1):
            raise ValueError(f"Expected stripped_max_agreement in (0, 1]. Received: {self.max_agreement!r}")


def stripped_brain(image: Image, rule: StrippedInput) -> tuple[np.ndarray, int] | None:
    """The brain of an input that arrived skull-stripped (module docstring), on its own grid, with the
    number of nonzero components; None when the input does not look stripped."""
    array = np.asarray(image.array)
    background = array == array.min()
    if np.count_nonzero(background) < rule.min_background * background.size:
        return None
    kept, components = largest_filled_component(~background)
    voxel_ml = abs(float(np.linalg.det(np.asarray(image.affine)[:3, :3]))) / 1000.0
    if np.count_nonzero(kept) * voxel_ml > rule.max_brain_ml:
        return None
    return kept, components


def largest_filled_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 6-connected component of a boolean mask with its enclosed holes filled, and the number of components."""
    labelled, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, bool), 0
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labelled == int(np.argmax(sizes))), int(count)


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The smallest box holding every True voxel of a 3D mask (empty slices for an empty mask)."""
    if not mask.any():
        return (slice(0, 0), slice(0, 0), slice(0, 0))
    return ndimage.find_objects(mask.astype(np.uint8))[0]  # type: ignore[return-value]


def grown(mask: np.ndarray, voxels: float) -> np.ndarray:
    """A boolean mask grown by ``voxels`` (Euclidean distance, in voxels of the mask's grid)."""
    if voxels <= 0 or not mask.any():
        return mask.copy()
    reach = int(math.ceil(voxels))
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    lo = [max(s.start - reach - 1, 0) for s in box]
    hi = [min(s.stop + reach + 1, n) for s, n in zip(box, mask.shape)]
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    result = np.zeros_like(mask, dtype=bool)
    result[window] = ndimage.distance_transform_edt(~mask[window]) <= voxels
    return result


def direction_agreement(masks: list[np.ndarray]) -> float:
    """The lowest pairwise Dice between masks (1.0 for one mask; two empty masks agree)."""
    lowest = 1.0
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            total = int(np.count_nonzero(masks[a])) + int(np.count_nonzero(masks[b]))
            dice = 1.0 if total == 0 else 2.0 * int(np.count_nonzero(masks[a] & masks[b])) / total
            lowest = min(lowest, dice)
    return lowest
