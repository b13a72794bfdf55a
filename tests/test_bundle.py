"""Model and ensemble bundles on tiny networks: write, verify, load both ways, tampering, atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import brainseg_tf.bundle.write as bundle_write
from brainseg_tf.bundle import (
    load_keras_model,
    load_serving_function,
    read_bundle_info,
    verify_bundle,
    write_ensemble_bundle,
    write_manifest,
    write_model_bundle,
)
from brainseg_tf.bundle.export import _check_labels
from brainseg_tf.bundle.spec import FORMAT_VERSION
from brainseg_tf.bundle.load import _argmax_function
from brainseg_tf.bundle.manifest import sha256_file
from brainseg_tf.bundle.reexport import reexport_bundle
from brainseg_tf.config import Config
from brainseg_tf.errors import BundleError
from brainseg_tf.preprocessing import InputSpec
from brainseg_tf.labels import TISSUE
from brainseg_tf.models import build_segmenter, compile_segmenter

# TF variables under numpy 2 warn whenever Keras copies weights to numpy (upstream, harmless).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

CONFIG = Config().replace({"model.base_filters": 4, "model.depth": 2})
REPO = Path(__file__).resolve().parents[1]


def _batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One multiclass bundle (one training step, fixed 32x32 input), two single_class ones and their ensemble."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("bundles")
    multi = build_segmenter("multiclass", (32, 32, 3), TISSUE.num_classes, CONFIG.model)
    compile_segmenter(multi, "multiclass", CONFIG.model, class_names=TISSUE.names)
    multi.train_on_batch(_batch((2, 32, 32, 3)), np.eye(4, dtype="float32")[np.random.default_rng(1).integers(0, 4, (2, 32, 32))])
    np.save(root / "multi_expected.npy", multi.predict(_batch((2, 32, 32, 3), seed=2), verbose=0))
    paths = {"multi": write_model_bundle(root / "multi", multi, family="multiclass", label_set=TISSUE, config=CONFIG, metrics={"dice_gm": 0.5})}
    for class_index in (2, 3):
        single = build_segmenter("single_class", (None, None, 3), TISSUE.num_classes, CONFIG.model)
        paths[class_index] = write_model_bundle(
            root / f"single{class_index}", single, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=class_index
        )
    paths["ensemble"] = write_ensemble_bundle(root / "ensemble", [paths[2], paths[3]], label_set=TISSUE, config=CONFIG, metrics={"dice_gm": 0.4})
    paths["root"] = root
    return paths


@pytest.fixture
def multi_copy(bundles: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundles["multi"], tmp_path / "multi"))


# --- writing and loading --------------------------------------------------------------------------


def test_model_bundle_round_trip(bundles):
    path = bundles["multi"]
    data = verify_bundle(path)
    assert (data["format_version"], data["kind"], data["family"], data["class_index"]) == (FORMAT_VERSION, "model", "multiclass", None)
    assert data["input_spec"] == InputSpec.from_config(CONFIG).to_dict()
    assert set(data["versions"]) == {"python", "tensorflow", "keras", "numpy", "brainseg_tf"}
    assert data["git_commit"] is None or len(data["git_commit"]) == 40
    info = read_bundle_info(path)
    assert (info.kind, info.label_set, info.metrics, info.members) == ("model", TISSUE, {"dice_gm": 0.5}, [])
    manifest = (path / "manifest.sha256").read_text().splitlines()
    assert [line.split("  ")[1] for line in manifest] == sorted(line.split("  ")[1] for line in manifest)
    assert "bundle.json" in {line.split("  ")[1] for line in manifest}


def test_saved_model_matches_keras_on_another_shape(bundles):
    model = load_keras_model(bundles["multi"])
    serve = load_serving_function(bundles["multi"])
    assert not model.compiled  # an inference copy: no optimizer state in the bundle
    batch = _batch((2, 32, 48, 3), seed=3)
    probabilities = serve(batch)
    assert probabilities.shape == (2, 32, 48, 4) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, model.predict(batch, verbose=0), atol=1e-5)
    # the trained weights (batch-norm statistics included) survive: same output as before writing
    np.testing.assert_allclose(serve(_batch((2, 32, 32, 3), seed=2)), np.load(bundles["root"] / "multi_expected.npy"), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of pad_multiple=4"):
        serve(_batch((1, 30, 32, 3)))


@pytest.mark.parametrize("source", ["labels signature", "argmax of serving_default"])
def test_serving_labels_are_the_argmax_of_the_probabilities(bundles, source):
    import tensorflow as tf

    serve = load_serving_function(bundles["multi"])
    assert sorted(serve._loaded.signatures) == ["labels", "serving_default"]  # a softmax network gets both
    if source != "labels signature":  # as for a bundle exported before the labels signature existed
        serve._labels = _argmax_function(serve._signature, serve._input_name, tf.TensorSpec(serve.input_shape, tf.float32))
    for shape, seed in (((3, 32, 48, 3), 5), ((1, 16, 24, 3), 6)):  # any batch shape
        batch = _batch(shape, seed=seed)
        labels = serve.labels(batch)
        assert labels.dtype == np.uint8 and labels.shape == shape[:3]
        np.testing.assert_array_equal(labels, np.argmax(serve(batch), axis=-1))
    assert len(np.unique(labels)) > 1  # a probe that tells a constant answer apart
    with pytest.raises(ValueError, match="multiples of pad_multiple=4"):
        serve.labels(_batch((1, 30, 32, 3)))


def test_a_sigmoid_network_has_no_labels_signature(bundles):
    assert sorted(load_serving_function(bundles[2])._loaded.signatures) == ["serving_default"]


def test_labels_that_miss_the_highest_probability_are_refused(tmp_path):
    probabilities = np.array([[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]], np.float32)
    _check_labels(tmp_path, np.array([[1, 0]], np.uint8), probabilities)  # the argmax: accepted
    with pytest.raises(BundleError, match="0.2 below the highest"):
        _check_labels(tmp_path, np.array([[1, 2]], np.uint8), probabilities)
    with pytest.raises(BundleError, match="expected uint8"):
        _check_labels(tmp_path, np.array([[1, 0]], np.int64), probabilities)


def test_serving_function_needs_no_keras(bundles, tmp_path):
    """In a process where importing keras fails (as on an image without Keras 3), the SavedModel still serves."""
    np.save(tmp_path / "x.npy", _batch((1, 32, 48, 3), seed=4))
    code = (
        "import sys\n"
        "sys.modules['keras'] = None  # any 'import keras' now raises ImportError\n"
        "import numpy as np\n"
        "from brainseg_tf.bundle import load_serving_function\n"
        f"serve = load_serving_function({str(bundles['multi'])!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, serve(np.load({str(tmp_path / 'x.npy')!r})))\n"
        f"assert serve.labels(np.load({str(tmp_path / 'x.npy')!r})).dtype == np.uint8\n"
        "assert sys.modules['keras'] is None, 'keras was imported'\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = load_keras_model(bundles["multi"]).predict(np.load(tmp_path / "x.npy"), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_replacing_a_bundle_and_refusing_other_folders(bundles, tmp_path):
    model = load_keras_model(bundles[2])
    target = Path(shutil.copytree(bundles["multi"], tmp_path / "bundle"))
    write_model_bundle(target, model, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=2)
    assert read_bundle_info(target).family == "single_class"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or old folder left
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="notes: exists and is not a bundle"):
        write_model_bundle(tmp_path / "notes", model, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=2)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_failed_write_leaves_nothing(bundles, tmp_path, monkeypatch):
    def broken_export(model, directory):
        raise RuntimeError("export failed")

    monkeypatch.setattr(bundle_write, "export_saved_model", broken_export)
    model = load_keras_model(bundles[2])
    with pytest.raises(RuntimeError, match="export failed"):
        write_model_bundle(tmp_path / "new", model, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=2)
    assert list(tmp_path.iterdir()) == []
    existing = Path(shutil.copytree(bundles[2], tmp_path / "existing"))
    with pytest.raises(RuntimeError, match="export failed"):
        write_model_bundle(existing, model, family="single_class", label_set=TISSUE, config=CONFIG, metrics={}, class_index=2)
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]
    verify_bundle(existing)  # the old bundle is untouched


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"family": "single_class", "class_index": None}, "expected class_index in \\[1, 2, 3\\]"),
        ({"family": "multiclass", "class_index": 2}, "expected class_index=None"),
        ({"family": "sigmoid", "class_index": None}, "expected family"),
        ({"family": "multiclass", "class_index": None, "metrics": {"dice": "good"}}, "expected metrics as numbers"),
    ],
)
def test_write_refuses_inconsistent_arguments(bundles, tmp_path, arguments, message):
    model = load_keras_model(bundles["multi"])
    arguments = {"label_set": TISSUE, "config": CONFIG, "metrics": {}, **arguments}
    with pytest.raises(BundleError, match=message):
        write_model_bundle(tmp_path / "b", model, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_model_that_does_not_fit_the_label_set(bundles, tmp_path):
    single = load_keras_model(bundles[2])  # one output channel
    with pytest.raises(BundleError, match="4 channel"):
        write_model_bundle(tmp_path / "b", single, family="multiclass", label_set=TISSUE, config=CONFIG, metrics={})


# --- verification ---------------------------------------------------------------------------------


def _flip_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def _edit_manifest(bundle: Path, line: str) -> None:
    with open(bundle / "manifest.sha256", "a", encoding="utf-8") as stream:
        stream.write(line)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b: _flip_byte(b / "model.keras"), r"model\.keras: sha256 does not match"),
        (lambda b: (b / "extra.txt").write_text("x"), r"extra\.txt: unlisted file"),
        (lambda b: (b / "saved_model" / "variables" / "variables.index").unlink(), r"variables\.index: missing"),
        (lambda b: _edit_manifest(b, f"{'0' * 64}  ../outside\n"), r"refused path '\.\./outside'"),
        (lambda b: _edit_manifest(b, f"{'0' * 64}  /etc/passwd\n"), "absolute path"),
        (lambda b: _edit_manifest(b, "not a manifest line\n"), "expected '<64 hex digits>"),
        (lambda b: (b / "link").symlink_to(b / "bundle.json"), "link: symbolic link"),
        (lambda b: (b / "manifest.sha256").unlink(), "no manifest.sha256"),
    ],
    ids=["flipped-byte", "extra-file", "missing-file", "dotdot", "absolute", "malformed", "symlink", "no-manifest"],
)
def test_verify_refuses_tampered_bundles(multi_copy, tamper, message):
    tamper(multi_copy)
    with pytest.raises(BundleError, match=message) as caught:
        verify_bundle(multi_copy)
    assert str(caught.value).startswith(str(multi_copy))
    with pytest.raises(BundleError):
        load_serving_function(multi_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 4}, "unsupported format_version 4"),
        ({"kind": "zoo"}, "expected kind"),
        ({"class_index": 9}, "expected class_index null"),
        ({"label_set": {"name": "x"}}, "invalid label_set"),
    ],
)
def test_verify_refuses_bad_descriptions(multi_copy, change, message):
    data = json.loads((multi_copy / "bundle.json").read_text())
    (multi_copy / "bundle.json").write_text(json.dumps({**data, **change}))
    write_manifest(multi_copy)  # a consistent manifest: the description itself is at fault
    with pytest.raises(BundleError, match=f"bundle.json: {message}"):
        verify_bundle(multi_copy)


def test_verify_refuses_missing_keys(multi_copy):
    data = json.loads((multi_copy / "bundle.json").read_text())
    del data["input_spec"]
    (multi_copy / "bundle.json").write_text(json.dumps(data))
    write_manifest(multi_copy)
    with pytest.raises(BundleError, match=r"missing key\(s\) \['input_spec'\]"):
        verify_bundle(multi_copy)


# --- ensembles ------------------------------------------------------------------------------------


def test_ensemble_round_trip(bundles):
    info = read_bundle_info(bundles["ensemble"])
    assert (info.kind, info.family, info.class_index) == ("ensemble", "single_class", None)
    assert [(m.path.name, m.class_index, m.kind) for m in info.members] == [("gray_matter", 2, "model"), ("white_matter", 3, "model")]
    batch = _batch((1, 32, 48, 3), seed=5)
    for member, original in zip(info.members, (bundles[2], bundles[3])):
        np.testing.assert_allclose(load_serving_function(member.path)(batch), load_serving_function(original)(batch), atol=1e-6)
    with pytest.raises(BundleError, match="expected a bundle of kind 'model'"):
        load_keras_model(bundles["ensemble"])


def test_ensemble_catches_tampered_members(bundles, tmp_path):
    ensemble = Path(shutil.copytree(bundles["ensemble"], tmp_path / "ensemble"))
    _flip_byte(ensemble / "members" / "gray_matter" / "model.keras")
    with pytest.raises(BundleError, match=r"members/gray_matter/model\.keras: sha256 does not match"):
        verify_bundle(ensemble)
    # re-hashing the member and the ensemble hides the change from both manifests, not from bundle.json
    write_manifest(ensemble / "members" / "gray_matter")
    write_manifest(ensemble)
    with pytest.raises(BundleError, match=r"gray_matter/manifest\.sha256: sha256 does not match the ensemble's bundle\.json"):
        verify_bundle(ensemble)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (["multi"], "expected kind 'model'|expected family 'single_class'"),
        ([2, 2], "distinct classes"),
        ([], "at least one member"),
    ],
)
def test_ensemble_refuses_unfit_members(bundles, tmp_path, members, message):
    with pytest.raises(BundleError, match=message):
        write_ensemble_bundle(tmp_path / "e", [bundles[m] for m in members], label_set=TISSUE, config=CONFIG, metrics={})
    assert list(tmp_path.iterdir()) == []


def test_ensemble_refuses_members_of_another_input_spec(bundles, tmp_path):
    other = CONFIG.replace({"preprocess.voxel_size": 2.0})
    with pytest.raises(BundleError, match="expected input_spec"):
        write_ensemble_bundle(tmp_path / "e", [bundles[2]], label_set=TISSUE, config=other, metrics={})


# --- re-exporting ---------------------------------------------------------------------------------


def _saved_variables(bundle: Path) -> int:
    import tensorflow as tf

    return len(tf.train.list_variables(str(bundle / "saved_model" / "variables" / "variables")))


def test_reexport_folds_an_older_export_and_keeps_weights_and_record(bundles, tmp_path, monkeypatch):
    import brainseg_tf.models.serving as serving

    with monkeypatch.context() as patch:  # an exporter from before folding
        patch.setattr(serving, "fold_batch_norm", lambda model: model)
        old = write_model_bundle(tmp_path / "old", load_keras_model(bundles["multi"]), family="multiclass", label_set=TISSUE, config=CONFIG, metrics={})
    record, keras_file, unfolded = (old / "bundle.json").read_bytes(), (old / "model.keras").read_bytes(), _saved_variables(old)

    reexport_bundle(old)

    assert (old / "bundle.json").read_bytes() == record and (old / "model.keras").read_bytes() == keras_file
    assert verify_bundle(old)["kind"] == "model"
    assert _saved_variables(old) < unfolded  # the batch norms' variables are gone
    batch = _batch((2, 32, 48, 3), seed=9)
    np.testing.assert_allclose(load_serving_function(old)(batch), load_keras_model(old)(batch, training=False), atol=1e-4)


def test_reexport_of_an_ensemble_records_its_members_new_manifests(bundles, tmp_path):
    ensemble = Path(shutil.copytree(bundles["ensemble"], tmp_path / "ensemble"))
    before = json.loads((ensemble / "bundle.json").read_text())

    reexport_bundle(ensemble)

    after = json.loads((ensemble / "bundle.json").read_text())
    assert [m["sha256"] for m in after["members"]] == [sha256_file(ensemble / m["path"] / "manifest.sha256") for m in after["members"]]
    assert {k: v for k, v in after.items() if k != "members"} == {k: v for k, v in before.items() if k != "members"}
    assert read_bundle_info(ensemble).kind == "ensemble"


def test_reexport_refuses_a_tampered_bundle_and_leaves_it_as_it_was(multi_copy):
    _flip_byte(multi_copy / "model.keras")
    files = {p: p.read_bytes() for p in multi_copy.rglob("*") if p.is_file()}
    with pytest.raises(BundleError, match="sha256 does not match"):
        reexport_bundle(multi_copy)
    assert {p: p.read_bytes() for p in multi_copy.rglob("*") if p.is_file()} == files
    assert [p.name for p in multi_copy.parent.iterdir() if p.name.startswith(".")] == []


def test_reading_an_ensemble_hashes_each_file_once(monkeypatch):
    """The ensemble's manifest lists its members' files: verifying a member compares, it does not hash again."""
    import collections

    import brainseg_tf.bundle.manifest as manifest
    import brainseg_tf.bundle.verify as verify

    counts: collections.Counter = collections.Counter()
    real = manifest.sha256_file

    def counted(path):
        counts[Path(path).resolve()] += 1
        return real(path)

    monkeypatch.setattr(manifest, "sha256_file", counted)
    monkeypatch.setattr(verify, "sha256_file", counted)
    root = Path(__file__).resolve().parents[1] / "models" / "tissue-ensemble"
    info = read_bundle_info(root)
    files = {p.resolve() for p in root.rglob("*") if p.is_file()} - {(root / "manifest.sha256").resolve()}
    assert len(info.members) == 3 and set(counts) == files
    assert max(counts.values()) == 1
