"""Per-sample augmentation in numpy: left/right flip with label swap, rotation and scale, intensity changes.

Every random draw comes from the `numpy.random.Generator` passed in, so a sample seeded by
(seed, epoch, index) is augmented identically whichever model family consumes it.

Left/right flip (RAS+: left/right is volume axis 0). The flip mirrors the sample axis that
came from volume axis 0, and swaps paired classes with `LabelSet.flip_permutation`:

* patches: axis 0 (D) of image and labels;
* slices with ``slice_axis`` 1 or 2: axis 0 (H) of image and labels (H is volume axis 0);
* slices with ``slice_axis`` 0 (sagittal): a sagittal slice's content does not change under a
  mirror, only which slice it is and the order of its neighbours. The flip therefore reverses
  the context channels and swaps the labels: the sample equals the one the mirrored volume
  gives at the mirrored slice position.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from brainseg_tf.config import AugmentConfig
from brainseg_tf.errors import ConfigError

logger = logging.getLogger(__name__)

NOISE_BANK_SIZE = 1 << 22
"""Standard normals kept for additive noise (16 MiB); see `gaussian_noise`."""
NOISE_BANK_SEED = 20260101


@dataclass(frozen=True)
class Augmentation:
    """Random parameters drawn for one sample.

    Attributes:
        matrix: (ndim, ndim) map from output offsets to volume offsets (rotation times scale) over
            the sample's spatial axes; None when rotation and scale are disabled (an exact crop is read).
        flip: whether to mirror left/right.
        gamma: exponent applied to intensities.
        intensity_scale: global factor applied after gamma.
    """

    matrix: np.ndarray | None
    flip: bool
    gamma: float
    intensity_scale: float


def check_augment_config(augment: AugmentConfig) -> None:
    """Check augmentation settings.

    Raises:
        ConfigError: a setting outside its accepted range, named in the message.
    """
    if not 0.0 <= augment.flip_probability <= 1.0:
        raise ConfigError(
            f"Expected generator.augment.flip_probability in [0, 1]. Received: flip_probability={augment.flip_probability!r}"
        )
    if not 0.0 <= augment.max_rotation_deg <= 180.0:
        raise ConfigError(
            f"Expected generator.augment.max_rotation_deg in [0, 180]. Received: max_rotation_deg={augment.max_rotation_deg!r}"
        )
    for name in ("max_scale", "intensity_scale"):
        value = getattr(augment, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"Expected generator.augment.{name} in [0, 1). Received: {name}={value!r}")
    for name in ("gamma_log_std", "noise_std"):
        value = getattr(augment, name)
        if not value >= 0.0:
            raise ConfigError(f"Expected generator.augment.{name} >= 0. Received: {name}={value!r}")


def draw_augmentation(rng: np.random.Generator, augment: AugmentConfig, ndim: int) -> Augmentation:
    """Draw the parameters of one sample's augmentation.

    Args:
        rng: the sample's random generator.
        augment: ranges and probabilities.
        ndim: axes that rotation and scale act on: 2 (in-plane) for slices, 3 for patches.
    """
    matrix = random_linear_map(rng, ndim, augment.max_rotation_deg, augment.max_scale)
    flip = bool(rng.random() < augment.flip_probability)
    gamma = float(np.exp(rng.normal(0.0, augment.gamma_log_std)))
    scale = float(rng.uniform(1.0 - augment.intensity_scale, 1.0 + augment.intensity_scale))
    return Augmentation(matrix=matrix, flip=flip, gamma=gamma, intensity_scale=scale)


def random_linear_map(rng: np.random.Generator, ndim: int, max_rotation_deg: float, max_scale: float) -> np.ndarray | None:
    """An (ndim, ndim) rotation-times-scale map, or None when both ranges are zero.

    Rotations are drawn uniformly in ``[-max_rotation_deg, max_rotation_deg]`` in every plane
    (one plane for 2D, three for 3D); scales uniformly in ``[1 - max_scale, 1 + max_scale]`` per axis.
    """
    if max_rotation_deg == 0 and max_scale == 0:
        return None
    matrix = np.eye(ndim)
    for first, second in [(a, b) for a in range(ndim) for b in range(a + 1, ndim)]:
        angle = math.radians(rng.uniform(-max_rotation_deg, max_rotation_deg))
        rotation = np.eye(ndim)
        rotation[[first, first, second, second], [first, second, first, second]] = [
            math.cos(angle), -math.sin(angle), math.sin(angle), math.cos(angle),
        ]
        matrix = matrix @ rotation
    return matrix @ np.diag(rng.uniform(1.0 - max_scale, 1.0 + max_scale, size=ndim))


def flip_axes(mode: str, slice_axis: int) -> tuple[int, int | None]:
    """Sample axes mirrored by a left/right flip: (image axis, labels axis or None). See the module docstring."""
    if mode == "slices" and slice_axis == 0:
        return -1, None
    return 0, 0


def flip_left_right(
    image: np.ndarray, labels: np.ndarray, axes: tuple[int, int | None], permutation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a sample left/right and swap paired classes.

    Args:
        image: sample image (channels last).
        labels: sample class map.
        axes: from `flip_axes`.
        permutation: `LabelSet.flip_permutation()`, class -> mirrored class.
    """
    image_axis, label_axis = axes
    image = np.flip(image, axis=image_axis)
    if label_axis is not None:
        labels = np.flip(labels, axis=label_axis)
    return np.ascontiguousarray(image), permutation.astype(labels.dtype)[labels]


def adjust_intensity(image: np.ndarray, rng: np.random.Generator, augmentation: Augmentation, noise_std: float) -> np.ndarray:
    """Gamma, then global scale, then additive Gaussian noise (see `gaussian_noise`); returns float32.

    Exact zeros stay exact (gamma and scale keep them; the noise skips them): a skull-stripping tool's
    zeros around a brain, and the padding beyond a volume, carry no noise at inference either.
    """
    out = np.power(np.maximum(image, 0.0), augmentation.gamma, dtype=np.float32)
    out *= np.float32(augmentation.intensity_scale)
    if noise_std > 0:
        noise = np.float32(noise_std) * gaussian_noise(rng, out.shape)
        out += np.where(out != 0.0, noise, np.float32(0.0))
    return out


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of `shape`, seeded by `rng`.

    Drawing fresh normals costs about as much as the rest of a 2D sample, so the noise is a window
    of a fixed bank of `NOISE_BANK_SIZE` normals starting at an offset drawn from `rng`: every
    voxel is still N(0, 1) and independent of its neighbours; two samples may share shifted
    windows, which is harmless for augmentation. Shapes larger than the bank get fresh draws.
    """
    size = int(np.prod(shape))
    if size > NOISE_BANK_SIZE:
        return rng.standard_normal(shape, dtype=np.float32)
    offset = int(rng.integers(NOISE_BANK_SIZE - size + 1))
    return _noise_bank()[offset : offset + size].reshape(shape)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    bank = np.random.default_rng(NOISE_BANK_SEED).standard_normal(NOISE_BANK_SIZE, dtype=np.float32)
    bank.setflags(write=False)
    return bank
