"""Smooth random fields on voxel grids: cubic B-splines (elastic deformations, within-label variation) and
multiplicative bias fields, shared by the embedded dataset and the image synthesis from label maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BIAS_KNOTS_PER_FIELD_OF_VIEW = 2  # bias-field control points every half field of view: a low-order field


@dataclass(frozen=True)
class SmoothField:
    """A cubic B-spline field on a voxel grid: control values every ``spacing`` voxels, the first at -spacing."""

    coefficients: np.ndarray  # (channels, knots0, knots1, knots2), float32
    spacing: float  # voxels between control points

    @classmethod
    def random(cls, rng: np.random.Generator, shape: Sequence[int], spacing: float, channels: int) -> SmoothField:
        """Standard normal control values for ``channels`` components, covering a grid of ``shape``."""
        knots = [int(np.ceil((n - 1) / spacing)) + 3 for n in shape]
        return cls(rng.standard_normal((channels, *knots), dtype=np.float32), spacing)

    def evaluate(self, positions: Sequence[np.ndarray]) -> np.ndarray:
        """(channels, len0, len1, len2) float32 values on the grid ``positions[0] x positions[1] x positions[2]``."""
        w0, w1, w2 = (bspline_weights(p, self.spacing, m) for p, m in zip(positions, self.coefficients.shape[1:]))
        partial = np.matmul(w1, self.coefficients @ w2.T)  # (channels, knots0, len1, len2)
        flat = partial.reshape(partial.shape[0], partial.shape[1], -1)
        return np.matmul(w0, flat).reshape(partial.shape[0], len(w0), len(w1), len(w2))

    def scaled_to_peak(self, peak: float, shape: Sequence[int]) -> SmoothField:
        """The field scaled so its largest vector norm, sampled over a grid of ``shape``, is ``peak``."""
        step = max(1, int(self.spacing // 4))
        sampled = self.evaluate([np.arange(0, n, step, dtype=np.float32) for n in shape])
        largest = float(np.sqrt((sampled**2).sum(axis=0)).max())
        scale = peak / largest if largest > 0 else 0.0
        return SmoothField(self.coefficients * np.float32(scale), self.spacing)

    def plus_affine(self, matrix: np.ndarray, offset: np.ndarray) -> SmoothField:
        """This field plus ``matrix @ x + offset``: cubic B-splines reproduce linear maps exactly."""
        lattice = np.meshgrid(*[(np.arange(m) - 1) * self.spacing for m in self.coefficients.shape[1:]], indexing="ij")
        linear = np.einsum("ab,bijk->aijk", matrix, np.stack(lattice)) + np.reshape(offset, (3, 1, 1, 1))
        return SmoothField((self.coefficients + linear).astype(np.float32), self.spacing)


def bspline_weights(positions: np.ndarray, spacing: float, knots: int) -> np.ndarray:
    """(len(positions), knots) cubic B-spline weights; control point ``a`` sits at ``(a - 1) * spacing``."""
    t = np.abs(positions[:, None] / spacing - (np.arange(knots, dtype=np.float32) - 1))
    near = (4 - 6 * t**2 + 3 * t**3) / 6
    far = np.clip(2 - t, 0, None) ** 3 / 6
    return np.where(t < 1, near, far).astype(np.float32)


def bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(strength * f)``, f a coarse B-spline field with peak |f| = 1."""
    spacing = max(shape) / BIAS_KNOTS_PER_FIELD_OF_VIEW
    field = SmoothField.random(rng, shape, spacing, channels=1).scaled_to_peak(1.0, shape)
    return np.exp(np.float32(strength) * field.evaluate([np.arange(n, dtype=np.float32) for n in shape])[0])
