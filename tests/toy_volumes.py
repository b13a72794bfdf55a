"""Small volumes the committed bundles accept as a brain (they carry a brain extractor since 2026-12-07).

The committed bundles refuse a volume with less than 100 mL of brain ("no brain found"), so a random
20x22x18 box is no longer a 'good input' for tests of the command-line and plugin mechanics. A box of
tissue of at least 100 mL on exact zeros arrives as a skull-stripping tool writes a brain: the extractor
takes it as it is (`inference.extraction.stripped_brain`), no network runs, and the volume is segmented.
"""

from __future__ import annotations

import numpy as np

SHAPE = (56, 58, 52)
"""A toy brain's grid: a 48x48x44 box of tissue (101 mL at 1 mm) with 4-5 voxels of exact zeros around it."""


def toy_brain(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Random tissue intensities in (0.2, 1.2] inside a box of 101 mL (at 1 mm), exact zeros outside."""
    image = np.zeros(shape, np.float32)
    box = tuple(slice(4, n - 4) for n in shape[:2]) + (slice(4, shape[2] - 4),)
    image[box] = np.random.default_rng(seed).random(tuple(s.stop - s.start for s in box), dtype=np.float32) + 0.2
    return image
