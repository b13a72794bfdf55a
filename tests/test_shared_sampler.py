"""One `SubjectSampler` per run, shared by every network's dataset (TensorFlow keeps each dataset's source alive)."""

from __future__ import annotations

import numpy as np
import pytest
from test_focus import PAIRED, _subject

from brainseg_tf.config import Config
from brainseg_tf.data import SampleSource, TargetEncoding, make_dataset
from brainseg_tf.data.sampling import SubjectSampler
from training.inputs import RunData


def test_sources_share_a_sampler_built_over_their_subjects_and_config() -> None:
    config = Config().replace({"generator.slice_shape": [8, 8], "generator.batch_size": 2, "generator.samples_per_epoch": 4}).generator
    subjects = [_subject()]
    sampler = SubjectSampler(subjects, PAIRED.num_classes, config)
    shared = SampleSource(subjects, PAIRED, config, sampler=sampler)
    assert shared.sampler is sampler
    assert np.array_equal(shared.sample(0, 3)[0], SampleSource(subjects, PAIRED, config).sample(0, 3)[0])  # the same samples
    with pytest.raises(ValueError, match="sampler built over these subjects with this generator config"):
        SampleSource([_subject()], PAIRED, config, sampler=sampler)  # other subject objects
    with pytest.raises(ValueError, match="sampler built over these subjects"):
        SampleSource(subjects, PAIRED, Config().replace({"generator.slice_shape": [16, 16]}).generator, sampler=sampler)
    first = next(make_dataset(subjects, PAIRED, config, TargetEncoding.sigmoid(1), sampler=sampler).as_numpy_iterator())
    assert first[0].shape == (2, 8, 8, 3)


def test_a_run_builds_its_training_sampler_once() -> None:
    config = Config().replace({"generator.slice_shape": [8, 8]}).generator
    data = RunData(PAIRED, [_subject()], [_subject()])
    assert data.train_sampler(config) is data.train_sampler(config)
    other = Config().replace({"generator.slice_shape": [16, 16]}).generator
    assert data.train_sampler(other) is not data.train_sampler(config) and len(data.samplers) == 2
