"""Member regions (`brainseg_tf.regions`): atlas boxes carried onto a subject by brain moments, in bundles and heads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from brainseg_tf.bundle import read_bundle_info, write_ensemble_bundle, write_manifest, write_model_bundle
from brainseg_tf.config import Config, InferenceConfig
from brainseg_tf.errors import BundleError, ConfigError
from brainseg_tf.io import LabelMap
from brainseg_tf.labels import STRUCTURES, TISSUE, LabelSet
from brainseg_tf.models import build_segmenter
from brainseg_tf.regions import AtlasFrame, Region, atlas_frame, atlas_regions, mirrored_moments, region_box, subject_moments
from inference.heads import head_for

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-40.0, -50.0, -30.0]


def _atlas() -> LabelMap:
    """An ellipsoid brain (label 3) on a 2 mm grid holding a box of class 1 on its left and class 2 on its right."""
    index = np.indices((41, 51, 31)).astype(float)
    centre = np.array([20.0, 25.0, 15.0]).reshape(3, 1, 1, 1)
    inside = (((index - centre) / np.array([16.0, 20.0, 12.0]).reshape(3, 1, 1, 1)) ** 2).sum(axis=0) <= 1
    labels = np.where(inside, 3, 0).astype(np.int32)
    labels[10:14, 20:26, 12:16] = 1
    labels[27:31, 20:26, 12:16] = 2
    return LabelMap(labels, AFFINE)


def test_regions_and_frames_check_their_values_and_round_trip() -> None:
    region = Region((0.0, 1.0, 2.0), (3.0, 4.0, 5.0))
    assert Region.from_list(region.to_list()) == region
    frame = atlas_frame(_atlas())
    assert AtlasFrame.from_dict(json.loads(json.dumps(frame.to_dict()))) == frame
    with pytest.raises(ValueError, match="low < high on every axis"):
        Region((0.0, 1.0, 2.0), (3.0, 1.0, 5.0))
    with pytest.raises(ValueError, match="two finite 3-vectors"):
        Region((0.0, float("nan"), 2.0), (3.0, 4.0, 5.0))
    with pytest.raises(ValueError, match="\\[\\[x, y, z\\], \\[x, y, z\\]\\]"):
        Region.from_list([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="symmetric positive-definite"):
        AtlasFrame((0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)))


def test_a_class_box_is_its_voxel_centres_extent_grown_by_the_margin() -> None:
    regions = atlas_regions(_atlas(), [1, 2], 5.0)
    assert regions[1] == Region((-40 + 20 - 5.0, -50 + 40 - 5.0, -30 + 24 - 5.0), (-40 + 26 + 5.0, -50 + 50 + 5.0, -30 + 30 + 5.0))
    with pytest.raises(ValueError, match="class 7, absent"):
        atlas_regions(_atlas(), [7], 5.0)
    with pytest.raises(ValueError, match="margin >= 0"):
        atlas_regions(_atlas(), [1], -1.0)


def test_on_the_atlas_itself_a_box_lands_on_its_own_voxels() -> None:
    atlas = _atlas()
    image = (np.asarray(atlas.array) > 0).astype(np.float32)
    moments = subject_moments(image, 2.0)
    box = region_box(atlas_regions(atlas, [1], 0.0)[1], atlas_frame(atlas), moments, 2.0, image.shape)
    for part, (first, last) in zip(box, ((10, 13), (20, 25), (12, 15))):  # class 1's voxels, rounded outwards by at most one
        assert part.start in (first - 1, first) and part.stop in (last + 1, last + 2)
    mirrored = subject_moments(np.ascontiguousarray(image[::-1]), 2.0)
    np.testing.assert_allclose(mirrored_moments(moments, image.shape, 2.0)[0], mirrored[0], atol=1e-9)
    np.testing.assert_allclose(mirrored_moments(moments, image.shape, 2.0)[1], mirrored[1], atol=1e-9)
    far = Region((500.0, 500.0, 500.0), (510.0, 510.0, 510.0))
    assert region_box(far, atlas_frame(atlas), moments, 2.0, image.shape) is None
    assert subject_moments(np.zeros((20, 20, 20), np.float32), 2.0) is None


PAIRED = LabelSet(name="paired", values=(0, 11, 12, 20), names=("background", "Left-A", "Right-A", "B"), lr_pairs=((1, 2),))
CONFIG = Config().replace({"model.base_filters": 4, "model.depth": 2, "preprocess.voxel_size": 2.0})


@pytest.fixture(scope="module")
def regional(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirrored ensemble whose Left-A member reads only class 1's box (margin 2 mm); B reads the whole volume."""
    keras.utils.set_random_seed(4)
    root = tmp_path_factory.mktemp("regional")
    members = []
    for index in (1, 3):
        model = build_segmenter("single_class", (None, None, 3), PAIRED.num_classes, CONFIG.model)
        members.append(write_model_bundle(root / f"m{index}", model, family="single_class", label_set=PAIRED, config=CONFIG, metrics={}, class_index=index))
    regions = (atlas_frame(_atlas()), atlas_regions(_atlas(), [1], 2.0))
    return write_ensemble_bundle(root / "ensemble", members, label_set=PAIRED, config=CONFIG, metrics={}, mirrored_pairs=True, regions=regions)


def test_a_member_with_a_region_reads_only_its_box_on_either_side(regional: Path) -> None:
    info = read_bundle_info(regional)
    assert info.atlas_frame == atlas_frame(_atlas()) and [m.region is not None for m in info.members] == [True, False]
    head = head_for(info, InferenceConfig())
    image = (np.asarray(_atlas().array) > 0).astype(np.float32) * np.random.default_rng(0).uniform(0.5, 1.0, (41, 51, 31)).astype(np.float32)
    left, right, whole = head._member_scores(image)
    assert whole.shape == (41, 51, 31, 1) and np.count_nonzero(whole) > 0.5 * whole.size
    box = region_box(info.members[0].region, info.atlas_frame, subject_moments(image, 2.0), 2.0, image.shape)
    for part, (first, last) in zip(box, ((9, 14), (19, 26), (11, 16))):  # class 1's voxels grown by 2 mm = 1 voxel
        assert part.start in (first - 1, first) and part.stop in (last + 1, last + 2)
    outside = np.ones(image.shape, bool)
    outside[box] = False
    assert np.count_nonzero(left[outside]) == 0 and np.count_nonzero(left[box]) > 0
    mirrored = (slice(41 - box[0].stop, 41 - box[0].start), *box[1:])  # the same box read on the mirrored volume: the right side
    outside = np.ones(image.shape, bool)
    outside[mirrored] = False
    assert np.count_nonzero(right[outside]) == 0 and np.count_nonzero(right[mirrored]) > 0
    assert head.scores(image).shape == (41, 51, 31, 4)
    empty = head._member_scores(np.zeros_like(image))  # no brain to place a box on: every member reads the whole volume
    assert all(s.shape == (41, 51, 31, 1) for s in empty)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.pop("atlas_frame"), "a region_mm needs the ensemble's atlas_frame"),
    (lambda d: d["members"][0].update(region_mm=[[0, 0, 0], [0, 1, 1]]), "bad region_mm: Expected a region with low < high"),
    (lambda d: d.update(atlas_frame={"mean": [0, 0]}), "bad atlas_frame"),
])
def test_bad_regions_in_bundle_json_are_refused(regional: Path, tmp_path: Path, edit, words: str) -> None:
    copy = Path(shutil.copytree(regional, tmp_path / "ensemble"))
    data = json.loads((copy / "bundle.json").read_text())
    edit(data)
    (copy / "bundle.json").write_text(json.dumps(data))
    write_manifest(copy)
    with pytest.raises(BundleError, match=words):
        read_bundle_info(copy)


def test_member_regions_come_from_the_structures_atlas_only() -> None:
    from training.run import member_regions

    assert member_regions(STRUCTURES, [1], 0.0) is None
    with pytest.raises(ConfigError, match="only on the structures label set"):
        member_regions(TISSUE, [1], 10.0)
    with pytest.raises(ConfigError, match="member_region_margin_mm >= 0"):
        member_regions(STRUCTURES, [1], -1.0)
    frame, regions = member_regions(STRUCTURES, [STRUCTURES.class_index("Left-Hippocampus")], 10.0)
    hippocampus = regions[STRUCTURES.class_index("Left-Hippocampus")]
    assert hippocampus.high[0] < 0 < frame.mean[1] + 100  # a left structure: its box lies at negative x (RAS)
    size = np.subtract(hippocampus.high, hippocampus.low)
    assert np.all(size > 20) and np.all(size < 90)
