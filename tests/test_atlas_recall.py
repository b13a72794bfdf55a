"""Atlas recall (`brainseg_tf.atlas_recall`): the structures atlas laid on a subject without reading its structures."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.atlas_recall import recall_atlas
from brainseg_tf.io import LabelMap
from brainseg_tf.scoring import dice_scores


def _halves(shape: tuple[int, int, int], affine: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """An ellipsoid brain in world mm, label 1 left of its centre (world x), 2 right of it."""
    index = np.indices(shape).reshape(3, -1).astype(float)
    world = (affine[:3, :3] @ index + affine[:3, 3:4]).reshape(3, *shape)
    inside = (((world - centre.reshape(3, 1, 1, 1)) / radii.reshape(3, 1, 1, 1)) ** 2).sum(axis=0) <= 1
    return np.where(inside, np.where(world[0] < centre[0], 1, 2), 0).astype(np.int32)


ATLAS_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
ATLAS_AFFINE[:3, 3] = -40.0
ATLAS = LabelMap(_halves((41, 41, 41), ATLAS_AFFINE, np.zeros(3), np.array([24.0, 30.0, 20.0])), ATLAS_AFFINE)


def _subject() -> tuple[np.ndarray, np.ndarray]:
    """The atlas brain 1.2x larger and 10 mm to the right, on a 1.5 mm grid of its own."""
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = [-50.0, -55.0, -40.0]
    return _halves((70, 74, 54), affine, np.array([10.0, 0.0, 0.0]), 1.2 * np.array([24.0, 30.0, 20.0])), affine


def test_placed_reads_the_atlas_at_the_subject_s_world_points() -> None:
    affine = ATLAS_AFFINE.copy()
    affine[:3, 3] += [4.0, 0.0, 0.0]  # two atlas voxels to the right
    recalled = recall_atlas(ATLAS, (41, 41, 41), affine, "placed")
    assert np.array_equal(recalled.affine, affine) and recalled.array.dtype == ATLAS.array.dtype
    assert np.array_equal(recalled.array[:-2], ATLAS.array[2:]) and not recalled.array[-2:].any()


def test_moments_move_and_stretch_the_atlas_onto_the_subject_s_brain() -> None:
    truth, affine = _subject()
    placed = recall_atlas(ATLAS, truth.shape, affine, "placed")
    moments = recall_atlas(ATLAS, truth.shape, affine, "moments", brain_mask=truth > 0)
    placed_dice, moments_dice = dice_scores(placed.array, truth, [1, 2]), dice_scores(moments.array, truth, [1, 2])
    assert min(moments_dice.values()) > 0.95
    assert max(placed_dice.values()) < 0.8  # the plain placement misses the move and the size


@pytest.mark.parametrize("kwargs, words", [
    ({"alignment": "rigid"}, "alignment in \\('placed', 'moments'\\). Received: 'rigid'"),
    ({"alignment": "moments"}, "brain mask for alignment 'moments'. Received: None"),
    ({"alignment": "moments", "brain_mask": np.zeros((3, 3, 3), bool)}, "of the grid's shape \\(41, 41, 41\\). Received: \\(3, 3, 3\\)"),
    ({"alignment": "moments", "brain_mask": np.zeros((41, 41, 41), bool)}, "with brain voxels. Received: an empty mask"),
    ({"alignment": "moments", "brain_mask": np.pad(np.ones((5, 5, 1), bool), ((0, 36), (0, 36), (0, 40)))}, "extended along every axis"),
])
def test_bad_requests_are_refused_by_name(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        recall_atlas(ATLAS, (41, 41, 41), ATLAS_AFFINE, **kwargs)
