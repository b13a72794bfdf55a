"""Mirrored ensemble members (bundle format 3): one single-class member per left/right pair, run on the volume for its
own class and on the volume's mirror for its partner."""

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
from brainseg_tf.labels import STRUCTURES, TISSUE, LabelSet
from brainseg_tf.models import build_segmenter
from inference.heads import SigmoidEnsembleHead, head_for
from training.evaluate import ensemble_validation_metrics
from training.run import ensemble_member_classes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

PAIRED = LabelSet(name="paired", values=(0, 11, 12, 20), names=("background", "Left-A", "Right-A", "B"), lr_pairs=((1, 2),))
CONFIG = Config().replace({"model.base_filters": 4, "model.depth": 2, "data.label_set": "tissue"})


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[object, Path]:
    """Untrained single-class bundles of Left-A (1) and B (3) on the paired label set, and their mirrored ensemble."""
    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("mirrored")
    paths: dict[object, Path] = {}
    for index in (1, 2, 3):
        model = build_segmenter("single_class", (None, None, 3), PAIRED.num_classes, CONFIG.model)
        paths[index] = write_model_bundle(root / f"m{index}", model, family="single_class", label_set=PAIRED, config=CONFIG, metrics={}, class_index=index)
    paths["ensemble"] = write_ensemble_bundle(root / "ensemble", [paths[1], paths[3]], label_set=PAIRED, config=CONFIG, metrics={}, mirrored_pairs=True)
    return paths


def test_a_mirrored_member_records_its_partner_and_reads_back(members: dict[object, Path]) -> None:
    data = json.loads((members["ensemble"] / "bundle.json").read_text())
    assert data["format_version"] == 3
    assert [(m["class_index"], m.get("mirrored_class_index")) for m in data["members"]] == [(1, 2), (3, None)]
    info = read_bundle_info(members["ensemble"])
    assert [(m.class_index, m.mirrored_class_index) for m in info.members] == [(1, 2), (3, None)]


def test_the_head_runs_a_mirrored_member_on_the_mirrored_volume_for_its_partner(members: dict[object, Path]) -> None:
    head = head_for(read_bundle_info(members["ensemble"]), InferenceConfig())
    assert isinstance(head, SigmoidEnsembleHead) and head.class_indices == [1, 2, 3]
    own, partner = head.networks[0], head.networks[1]
    assert (own.mirrored, partner.mirrored, partner.predict is own.predict) == (False, True, True)
    volume = np.random.default_rng(0).random((40, 36, 8), dtype=np.float32)
    np.testing.assert_allclose(partner.scores(volume), own.scores(volume[::-1].copy())[::-1], atol=1e-6)
    assert not np.allclose(partner.scores(volume), own.scores(volume), atol=1e-3)  # an untrained network is not symmetric
    assert head.scores(volume).shape == (40, 36, 8, PAIRED.num_classes)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["members"][0].update(mirrored_class_index=3), "expected mirrored_class_index 2 \\(the left/right partner of class 1\\). Received: 3"),
    (lambda d: d["members"][1].update(mirrored_class_index=1), "expected mirrored_class_index None .* Received: 1"),
    (lambda d: d["members"][0].update(mirrored_class_index=True), "Received: True"),
    (lambda d: d.update(format_version=2), "a mirrored member needs format_version 3 or later. Received: 2"),
])
def test_a_tampered_mirror_entry_is_refused(members: dict[object, Path], tmp_path: Path, edit, words: str) -> None:
    copy = Path(shutil.copytree(members["ensemble"], tmp_path / "ensemble"))
    data = json.loads((copy / "bundle.json").read_text())
    edit(data)
    (copy / "bundle.json").write_text(json.dumps(data))
    write_manifest(copy)
    with pytest.raises(BundleError, match=words):
        read_bundle_info(copy)


def test_a_mirrored_ensemble_takes_one_member_per_pair(members: dict[object, Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="one member per left/right pair with mirrored pairs. Received: members for both sides of Left-A/Right-A$"):
        write_ensemble_bundle(tmp_path / "e", [members[1], members[2]], label_set=PAIRED, config=CONFIG, metrics={}, mirrored_pairs=True)
    with pytest.raises(BundleError, match="mirrored pairs only on a label set with left/right pairs and members in them"):
        write_ensemble_bundle(tmp_path / "e", [members[3]], label_set=PAIRED, config=CONFIG, metrics={}, mirrored_pairs=True)
    assert not (tmp_path / "e").exists()


def test_member_classes_keep_the_first_class_of_each_pair() -> None:
    mirrored = Config().replace({"training.ensemble_pairs": "mirrored"})
    classes = ensemble_member_classes(STRUCTURES, mirrored)
    assert len(classes) == STRUCTURES.num_classes - 1 - len(STRUCTURES.lr_pairs) == 18
    assert STRUCTURES.class_index("Left-Hippocampus") in classes and STRUCTURES.class_index("Right-Hippocampus") not in classes
    assert ensemble_member_classes(STRUCTURES, Config()) == STRUCTURES.foreground_classes
    with pytest.raises(ConfigError, match="label set with left/right pairs. Received: 'tissue', no pairs"):
        ensemble_member_classes(TISSUE, mirrored)
    with pytest.raises(ConfigError, match="axial or coronal slices or patches. Received: generator.slice_axis=0"):
        ensemble_member_classes(STRUCTURES, mirrored.replace({"generator.slice_axis": 0}))


def test_validation_metrics_score_the_partner_on_the_mirrored_samples(members: dict[object, Path]) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((2, 32, 32, 3), dtype=np.float32)
    classes = rng.integers(0, 4, (2, 32, 32)).astype(np.uint8)
    metrics = ensemble_validation_metrics([members[1], members[3]], [1, 3], PAIRED, (images, classes), 2, {1: 2})
    assert set(metrics) == {"val_dice_left_a", "val_dice_right_a", "val_dice_b"}
    plain = ensemble_validation_metrics([members[1], members[3]], [1, 3], PAIRED, (images, classes), 2)
    assert set(plain) == {"val_dice_left_a", "val_dice_b"}


def test_a_mirrored_ensemble_refuses_to_train_a_member_for_a_pair_s_second_class(tmp_path: Path) -> None:
    from training.run import train_ensemble

    config = Config().replace({"training.ensemble_pairs": "mirrored", "data.label_set": "structures"})
    with pytest.raises(ConfigError, match="Expected a member class of this ensemble .* Received: 'Right-Hippocampus'"):
        train_ensemble(config, labels=["Right-Hippocampus"], run_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
