"""Foreground centres on a single-class network's own class (`generator.centre_on: own class`)."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_tf.config import Config, GeneratorConfig
from brainseg_tf.data import SampleSource, TargetEncoding
from brainseg_tf.data.pipeline import focus_classes
from brainseg_tf.data.sampling import choose_centre, index_classes
from brainseg_tf.datasets.cache import Subject
from brainseg_tf.errors import ConfigError
from brainseg_tf.labels import LabelSet

PAIRED = LabelSet(name="paired", values=(0, 11, 12, 20), names=("background", "Left-A", "Right-A", "B"), lr_pairs=((1, 2),))


def _subject() -> Subject:
    classes = np.full((40, 40, 24), 3, np.uint8)  # mostly B
    classes[2:5, 2:5, 2:5] = 1
    classes[34:37, 34:37, 18:21] = 2
    return Subject("s", np.random.default_rng(0).random(classes.shape, dtype=np.float32), classes, np.eye(4), "train")


def test_centres_fall_on_the_focus_classes_and_the_default_draws_as_before() -> None:
    points = index_classes(_subject().classes, 4, np.random.default_rng(0))
    for seed in range(30):
        centre = choose_centre(np.random.default_rng(seed), points, 1.0, (1, 2))
        assert _subject().classes[centre] in (1, 2)
        assert choose_centre(np.random.default_rng(seed), points, 0.7) == choose_centre(np.random.default_rng(seed), points, 0.7, None)
    absent = choose_centre(np.random.default_rng(0), points, 1.0, (5,))  # no focus class present: a uniformly random voxel
    assert all(0 <= c < n for c, n in zip(absent, (40, 40, 24)))


def test_focus_is_a_member_s_class_and_its_partner_only_when_asked() -> None:
    own = Config().replace({"generator.centre_on": "own class"}).generator
    assert focus_classes(PAIRED, own, TargetEncoding.sigmoid(1)) == (1, 2)
    assert focus_classes(PAIRED, own, TargetEncoding.sigmoid(3)) == (3,)
    assert focus_classes(PAIRED, own, TargetEncoding.softmax()) is None
    assert focus_classes(PAIRED, Config().generator, TargetEncoding.sigmoid(1)) is None
    with pytest.raises(ConfigError, match="centre_on 'any class' or 'own class'. Received: 'mine'"):
        focus_classes(PAIRED, GeneratorConfig(centre_on="mine"), TargetEncoding.sigmoid(1))  # type: ignore[arg-type]


def test_a_focused_source_centres_its_foreground_samples_on_the_member_s_structure() -> None:
    config = Config().replace({"generator.slice_shape": [8, 8], "generator.foreground_fraction": 1.0, "generator.slice_axis": 2}).generator
    focused = SampleSource([_subject()], PAIRED, config, augment=False, focus=(1, 2))
    plain = SampleSource([_subject()], PAIRED, config, augment=False)
    focused_hits = sum(bool(np.isin(focused.sample(0, i)[1], (1, 2)).any()) for i in range(40))
    plain_hits = sum(bool(np.isin(plain.sample(0, i)[1], (1, 2)).any()) for i in range(40))
    assert focused_hits == 40 and plain_hits < 40
