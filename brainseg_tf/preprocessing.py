"""The input contract between training and inference: how a volume becomes a network's input, and back.

`Preprocessing` is the recipe every volume goes through, in dataset preparation and inference alike:
conform to RAS+ at an isotropic voxel size (`brainseg_tf.geometry.conform`), then clip and scale the
intensities between two percentiles (`brainseg_tf.intensity.normalize_intensity`). `InputSpec` adds
how a network reads the prepared volume (its *reader*: 2.5D slice stacks or 3D patches) and the size
multiple its spatial axes are padded to. A bundle stores its `InputSpec` as ``input_spec`` in
``bundle.json`` (`InputSpec.to_dict` / `InputSpec.from_dict`, the keys of `INPUT_SPEC_KEYS`); this
module is the only place that spells the recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from brainseg_tf.config import Config, PreprocessConfig
from brainseg_tf.geometry import ConformInverse, conform
from brainseg_tf.intensity import normalize_intensity
from brainseg_tf.io import Image, LabelMap

ORIENTATION = "RAS"
CONTEXT_PADDING = "zeros"
READER_MODES = ("slices", "patches")
INPUT_SPEC_KEYS: tuple[str, ...] = (
    "orientation",
    "voxel_size",
    "lower_percentile",
    "upper_percentile",
    "mode",
    "slice_axis",
    "context",
    "channels",
    "pad_multiple",
    "patch_shape",
    "context_padding",
)
"""The keys of a bundle's ``input_spec`` (format version 1 onwards)."""


class PreparedImage(NamedTuple):
    """A volume ready for the networks, and the way back to its own grid.

    Attributes:
        array: float32 (I, J, K), RAS+, at the contract's voxel size, intensities normalised.
        inverse: maps arrays on that grid back onto the input's shape and affine.
    """

    array: np.ndarray
    inverse: ConformInverse


@dataclass(frozen=True)
class Preprocessing:
    """Conform to RAS+ at ``voxel_size`` mm, then normalise between two intensity percentiles.

    Attributes:
        voxel_size: isotropic target voxel edge, mm.
        lower_percentile: intensities are clipped at this percentile of the voxels above zero...
        upper_percentile: ...and this one, then scaled to [0, 1].
    """

    voxel_size: float
    lower_percentile: float
    upper_percentile: float

    def __post_init__(self) -> None:
        if not _is_real(self.voxel_size) or not math.isfinite(self.voxel_size) or self.voxel_size <= 0:
            raise ValueError(f"Expected voxel_size as a positive number of mm. Received: voxel_size={self.voxel_size!r}")
        low, high = self.lower_percentile, self.upper_percentile
        if not (_is_real(low) and _is_real(high) and 0 <= low < high <= 100):
            raise ValueError(f"Expected 0 <= lower_percentile < upper_percentile <= 100. Received: {low!r}, {high!r}")

    @classmethod
    def from_config(cls, config: PreprocessConfig) -> Preprocessing:
        """The recipe a training config sets."""
        return cls(float(config.voxel_size), float(config.lower_percentile), float(config.upper_percentile))

    def prepare(self, image: Image) -> PreparedImage:
        """Conform (linear) and normalise an image.

        Raises:
            ValueError: not an `Image`, or an image without contrast (nothing to normalise).
        """
        if not isinstance(image, Image):
            raise ValueError(f"Expected an Image (intensities). Received: {type(image).__name__}")
        conformed, inverse = conform(image, self.voxel_size)
        return PreparedImage(normalize_intensity(conformed.array, self.lower_percentile, self.upper_percentile), inverse)

    def prepare_label_map(self, label_map: LabelMap) -> LabelMap:
        """Conform a label map (nearest neighbour) onto the grid `prepare` gives its image.

        Raises:
            ValueError: not a `LabelMap`.
        """
        if not isinstance(label_map, LabelMap):
            raise ValueError(f"Expected a LabelMap (integer labels). Received: {type(label_map).__name__}")
        return conform(label_map, self.voxel_size)[0]  # type: ignore[return-value]


@dataclass(frozen=True)
class SliceReader:
    """A 2.5D network's view: ``2 * context + 1`` neighbouring slices along ``slice_axis`` as channels.

    Channels run from the lowest slice index to the highest, with zeros beyond the volume's ends; the
    in-plane axes are the two other volume axes in ascending order (as `brainseg_tf.data.sampling`).
    """

    slice_axis: int
    context: int
    mode: Literal["slices"] = "slices"

    def __post_init__(self) -> None:
        if not _is_int(self.slice_axis) or self.slice_axis not in (0, 1, 2):
            raise ValueError(f"Expected slice_axis in [0, 1, 2]. Received: slice_axis={self.slice_axis!r}")
        if not _is_int(self.context) or self.context < 0:
            raise ValueError(f"Expected context as an int >= 0. Received: context={self.context!r}")

    @property
    def channels(self) -> int:
        """Input channels: the slice and its context."""
        return 2 * self.context + 1


@dataclass(frozen=True)
class PatchReader:
    """A 3D network's view: ``patch_shape`` over (I, J, K), one channel."""

    patch_shape: tuple[int, int, int]
    mode: Literal["patches"] = "patches"

    def __post_init__(self) -> None:
        shape = self.patch_shape
        if not isinstance(shape, (tuple, list)) or len(shape) != 3 or not all(_is_int(n) and n >= 1 for n in shape):
            raise ValueError(f"Expected patch_shape as 3 positive ints. Received: patch_shape={shape!r}")
        object.__setattr__(self, "patch_shape", tuple(int(n) for n in shape))

    @property
    def channels(self) -> int:
        """Input channels: one."""
        return 1


Reader = SliceReader | PatchReader


@dataclass(frozen=True)
class InputSpec:
    """Everything inference must know to feed a bundle's networks: the recipe, the reader, the padding.

    Attributes:
        preprocessing: how a volume is conformed and normalised.
        reader: how the network reads the prepared volume (`SliceReader` or `PatchReader`).
        pad_multiple: spatial sizes the network accepts are multiples of this (2 ** network depth).
    """

    preprocessing: Preprocessing
    reader: Reader
    pad_multiple: int

    def __post_init__(self) -> None:
        if not _is_int(self.pad_multiple) or self.pad_multiple < 1:
            raise ValueError(f"Expected pad_multiple as an int >= 1. Received: pad_multiple={self.pad_multiple!r}")
        if isinstance(self.reader, PatchReader) and any(n % self.pad_multiple for n in self.reader.patch_shape):
            raise ValueError(f"Expected patch_shape in multiples of pad_multiple={self.pad_multiple}. Received: {self.reader.patch_shape}")

    @classmethod
    def from_config(cls, config: Config) -> InputSpec:
        """The contract of a network trained with ``config``."""
        generator = config.generator
        if generator.mode == "slices":
            reader: Reader = SliceReader(int(generator.slice_axis), int(generator.context))
        else:
            reader = PatchReader(tuple(int(n) for n in generator.patch_shape))  # type: ignore[arg-type]
        return cls(Preprocessing.from_config(config.preprocess), reader, int(2**config.model.depth))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Read a bundle's ``input_spec``.

        Raises:
            ValueError: a missing key or a value the contract refuses, named in the message.
        """
        if not isinstance(data, dict):
            raise ValueError(f"Expected input_spec as an object. Received: {type(data).__name__}")
        missing = [key for key in INPUT_SPEC_KEYS if key not in data]
        if missing:
            raise ValueError(f"input_spec lacks key(s) {missing}")
        fixed = {"orientation": ORIENTATION, "context_padding": CONTEXT_PADDING}
        for key, expected in fixed.items():
            if data[key] != expected:
                raise ValueError(f"Expected input_spec {key} {expected!r}. Received: {data[key]!r}")
        if data["mode"] not in READER_MODES:
            raise ValueError(f"Expected input_spec mode in {list(READER_MODES)}. Received: mode={data['mode']!r}")
        try:
            preprocessing = Preprocessing(data["voxel_size"], data["lower_percentile"], data["upper_percentile"])
            reader: Reader = SliceReader(data["slice_axis"], data["context"]) if data["mode"] == "slices" else PatchReader(data["patch_shape"])
            spec = cls(preprocessing, reader, data["pad_multiple"])
        except TypeError as error:
            raise ValueError(f"unusable input_spec ({error})") from None
        if data["channels"] != reader.channels:
            raise ValueError(f"Expected input_spec channels {reader.channels} for its reader. Received: {data['channels']!r}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready ``input_spec`` of ``bundle.json``, with the keys of `INPUT_SPEC_KEYS`."""
        slices = isinstance(self.reader, SliceReader)
        return {
            "orientation": ORIENTATION,
            "voxel_size": float(self.preprocessing.voxel_size),
            "lower_percentile": float(self.preprocessing.lower_percentile),
            "upper_percentile": float(self.preprocessing.upper_percentile),
            "mode": self.reader.mode,
            "slice_axis": self.reader.slice_axis if slices else None,  # type: ignore[union-attr]
            "context": self.reader.context if slices else None,  # type: ignore[union-attr]
            "channels": self.reader.channels,
            "pad_multiple": self.pad_multiple,
            "patch_shape": None if slices else list(self.reader.patch_shape),  # type: ignore[union-attr]
            "context_padding": CONTEXT_PADDING,
        }

    @property
    def voxel_size(self) -> float:
        """The isotropic voxel size (mm) the networks work at."""
        return self.preprocessing.voxel_size

    def prepare(self, image: Image) -> PreparedImage:
        """The network-ready volume and its inverse (see `Preprocessing.prepare`)."""
        return self.preprocessing.prepare(image)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
