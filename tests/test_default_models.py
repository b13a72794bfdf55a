"""The committed default bundles under models/: intact, trained as `make train-default` says, and reaching
on the held-out subjects, through the whole inference path, the Dice their bundle.json records."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.bundle import read_bundle_info
from brainseg_tf.bundle.manifest import sha256_file
from brainseg_tf.config import Config, InferenceConfig, from_dict, load_config
from brainseg_tf.datasets import embedded
from brainseg_tf.labels import BRAIN, TISSUE, class_slug
from brainseg_tf.scoring import dice_scores
from inference.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
MULTICLASS, ENSEMBLE = ROOT / "models" / "tissue-multiclass", ROOT / "models" / "tissue-ensemble"
MODELS_BUDGET_BYTES = 25_000_000  # the issue's 25 MB
# bundle.json records Dice on 128 fixed 128x128 validation crops on the 1 mm conformed grid: since the fine-tuning
# on synthetic heads (configs/finetune-heads.yaml), half of them cut from heads, so they are lower than whole-volume
# scores (multi-class 0.630 / 0.897 / 0.909, ensemble 0.523 / 0.892 / 0.921). Here every held-out test subject is
# segmented whole, from its native file grid and scored there, through the whole inference path (the brain
# extractor takes these skull-stripped subjects by their exact zeros), and the mean must come within the tolerance
# of both the recorded Dice and the documented one (docs/comparison.md, `make compare`, 2026-12-07 16:41 UTC).
# Thin CSF varies most between subjects and with the grid (sd 0.02-0.05), gray and white matter by sd 0.01-0.02.
DOCUMENTED = {
    "tissue-multiclass": {"CSF": 0.751, "gray matter": 0.939, "white matter": 0.932},
    "tissue-ensemble": {"CSF": 0.836, "gray matter": 0.942, "white matter": 0.942},
}
TOLERANCE = {"CSF": 0.10, "gray matter": 0.05, "white matter": 0.05}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_subjects() -> list[tuple]:
    """The held-out (test split) embedded subjects on their native grids: (image, class map)."""
    config = load_config(ROOT / "configs" / "train-default.yaml").data.embedded
    template = embedded.load_template(1.0)
    subjects = []
    for index, (_, split) in enumerate(embedded.subject_ids(config)):
        if split == "test":
            image, label_map = embedded.synthesize_subject(template, index, config)
            subjects.append((image, TISSUE.to_classes(label_map.array)))
    return subjects


def test_bundles_are_intact_small_and_trained_with_the_documented_config() -> None:
    # `make train-default`: trained on configs/train-default.yaml, then fine-tuned with configs/finetune-heads.yaml
    # from that first bundle (training.init_from, a path that differs between machines, so only its presence counts).
    expected = load_config(ROOT / "configs" / "finetune-heads.yaml")
    for path, family in [(MULTICLASS, "multiclass"), (ENSEMBLE, "single_class")]:
        info = read_bundle_info(path)  # verifies every sha256 first
        assert info.family == family and info.label_set == TISSUE
        # The recorded config, with the defaults of sections added since filled in; inference settings are
        # not part of training (they are today's defaults, not those recorded when the bundle was written).
        recorded = from_dict(Config, info.config)
        assert recorded.training.init_from, f"{path.name}: not fine-tuned from a first-stage bundle"
        assert _training_part(recorded) == _training_part(expected)
    assert [m.class_index for m in read_bundle_info(ENSEMBLE).members] == [1, 2, 3]
    # Both carry the one brain extractor `make train-default` trains first (configs/train-brain-extractor.yaml).
    extractors = [read_bundle_info(path).brain_extractor for path in (MULTICLASS, ENSEMBLE)]
    assert all(e is not None and e.label_set == BRAIN and e.family == "single_class" for e in extractors)
    assert _training_part(from_dict(Config, extractors[0].config)) == _training_part(load_config(ROOT / "configs" / "train-brain-extractor.yaml"))
    assert sha256_file(Path(extractors[0].path) / "manifest.sha256") == sha256_file(Path(extractors[1].path) / "manifest.sha256")
    size = sum(p.stat().st_size for p in (ROOT / "models").rglob("*") if p.is_file())
    assert size <= MODELS_BUDGET_BYTES, f"models/ holds {size / 1e6:.1f} MB"


def _training_part(config: Config) -> Config:
    return dataclasses.replace(config, inference=InferenceConfig(), training=dataclasses.replace(config.training, init_from=None))


@pytest.mark.parametrize("bundle", [MULTICLASS, ENSEMBLE], ids=["multiclass", "ensemble"])
def test_bundle_reaches_its_recorded_dice_on_the_held_out_subjects(bundle: Path, test_subjects: list[tuple]) -> None:
    segmenter = Segmenter.from_bundle(bundle)
    recorded = read_bundle_info(bundle).metrics
    scores = [dice_scores(segmenter.segment(image).labels.array, classes, TISSUE.foreground_classes) for image, classes in test_subjects]
    assert len(scores) == 5
    for index in TISSUE.foreground_classes:
        name = TISSUE.names[index]
        mean = float(np.mean([s[index] for s in scores]))
        target = max(float(recorded[f"val_dice_{class_slug(name)}"]), DOCUMENTED[bundle.name][name])
        assert mean >= target - TOLERANCE[name], f"{name}: mean Dice {mean:.3f}, recorded or documented {target:.3f}"
