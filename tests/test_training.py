"""`python -m training multiclass | single-class | ensemble`: quick runs, bundles, resume after a kill, determinism."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from brainseg_tf.bundle import load_keras_model, load_serving_function, read_bundle_info
from brainseg_tf.config import QUICK_OVERRIDES, TrainingConfig, load_config
from brainseg_tf.data import TargetEncoding
from brainseg_tf.datasets import build_cache
from brainseg_tf.errors import BrainsegError, ConfigError
from training import run as training_run
from training.callbacks import EpochCheckpoint, ResumableEarlyStopping
from training.checkpoints import RunCheckpoints, RunState, trim_csv_log
from training.cli import main
from brainseg_tf.scoring import dice_scores
from training.inputs import load_run_data, validation_dataset, validation_samples
from training.run_config import check_training_config, save_config
from training.strategy import is_chief, make_strategy

# TF variables under numpy 2 warn whenever Keras copies weights to numpy (upstream, harmless).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
STEPS = QUICK_OVERRIDES["generator.samples_per_epoch"] // QUICK_OVERRIDES["generator.batch_size"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick embedded cache for every run of this module (subprocesses included)."""
    path = tmp_path_factory.mktemp("training-cache")
    build_cache(load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(path)}))
    return path


def _options(cache_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--quick", "--set", f"data.cache_dir={cache_dir}", "--run-dir", str(run_dir), *extra]


def _logged_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "log.csv").open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _optimizer_state(path: Path) -> tuple[int, list[np.ndarray]]:
    model = keras.models.load_model(path)
    return int(model.optimizer.iterations), [np.array(v) for v in model.optimizer.variables]


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_multiclass_run_writes_a_verified_bundle_of_the_best_epoch(cache_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert main(["multiclass", *_options(cache_dir, run_dir)]) == 0

    info = read_bundle_info(run_dir / "bundle")
    assert (info.kind, info.family, info.class_index) == ("model", "multiclass", None)
    state = RunCheckpoints(run_dir / "checkpoints").read_state()
    assert state is not None and state.epoch == 1
    assert info.metrics == pytest.approx(state.validation_metrics())
    assert set(info.metrics) == {"val_loss", "val_dice_csf", "val_dice_gray_matter", "val_dice_white_matter"}
    assert _logged_epochs(run_dir) == [0, 1]
    saved = load_config(run_dir / "config.yaml")
    assert saved == load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir)}) and info.config == saved.to_dict()

    keras_model = load_keras_model(run_dir / "bundle")
    best = keras.models.load_model(run_dir / "checkpoints" / "last.keras")
    best.load_weights(run_dir / "checkpoints" / "best.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(keras_model.get_weights(), best.get_weights()))
    batch = np.random.default_rng(0).random((2, 32, 48, 3), dtype=np.float32)
    np.testing.assert_allclose(load_serving_function(run_dir / "bundle")(batch), keras_model.predict(batch, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_single_class_run_uses_the_default_run_folder(cache_dir: Path, tmp_path: Path) -> None:
    options = ["--quick", "--set", f"data.cache_dir={cache_dir}", "--set", f"training.output_dir={tmp_path}", "--set", "training.epochs=1"]
    assert main(["single-class", "--label", "gray matter", *options]) == 0

    info = read_bundle_info(tmp_path / "single-class-gray_matter" / "bundle")
    assert (info.kind, info.family, info.class_index) == ("model", "single_class", 2)
    assert set(info.metrics) == {"val_loss", "val_dice_gray_matter"}


@pytest.mark.slow
def test_both_families_train_on_the_embedded_structures(cache_dir: Path, tmp_path: Path) -> None:
    structures = ["--set", "data.label_set=structures", "--set", "training.epochs=1"]
    assert main(["multiclass", *_options(cache_dir, tmp_path / "multiclass", *structures)]) == 0
    info = read_bundle_info(tmp_path / "multiclass" / "bundle")
    assert info.label_set.name == "structures" and info.label_set.num_classes == 33
    assert {"val_dice_left_hippocampus", "val_dice_right_hippocampus", "val_dice_brain_stem"} <= set(info.metrics)
    assert main(["single-class", "--label", "Left-Hippocampus", *_options(cache_dir, tmp_path / "hippocampus", *structures)]) == 0
    member = read_bundle_info(tmp_path / "hippocampus" / "bundle")
    assert member.class_index == info.label_set.class_index("Left-Hippocampus") and set(member.metrics) == {"val_loss", "val_dice_left_hippocampus"}


@pytest.mark.parametrize("heads, label_set, cached", [("structures", "tissue", "tissue"), ("tissue", "structures", "structures"),
                                                       ("brain", "structures", "structures")])
def test_heads_grow_around_the_labels_their_target_needs(cache_dir: Path, heads: str, label_set: str, cached: str) -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir), "data.heads": heads, "data.label_set": label_set})
    grown_around = "structures" if heads == "structures" else "tissue"
    with pytest.raises(ConfigError, match=f"cache of {grown_around} labels to grow heads around with data.heads={heads} .*Received: {cached} labels"):
        load_run_data(config)


def test_structures_heads_validate_on_fixed_heads_around_the_structures_brains(cache_dir: Path) -> None:
    overrides = {**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir), "data.heads": "structures", "data.label_set": "structures"}
    data = load_run_data(load_config(overrides=overrides))
    assert data.label_set.name == "structures" and data.cached_label_set is not None and data.cached_label_set.name == "structures"
    images, classes = validation_samples(data, load_config(overrides=overrides).generator, 4)
    assert images.shape == (4, 32, 32, 3) and classes.max() < 33 and len(np.unique(classes)) >= 5


@pytest.mark.slow
def test_a_brain_extractor_trains_on_fresh_synthetic_heads(cache_dir: Path, tmp_path: Path) -> None:
    """data.heads=brain: the cached brains grow heads, the network learns the brain mask (label set "brain")."""
    run_dir = tmp_path / "brain"
    assert main(["single-class", "--label", "brain", *_options(cache_dir, run_dir, "--set", "data.heads=brain")]) == 0

    info = read_bundle_info(run_dir / "bundle")
    assert (info.family, info.class_index, info.label_set.name) == ("single_class", 1, "brain")
    assert set(info.metrics) == {"val_loss", "val_dice_brain"} and info.input_spec.voxel_size == 3.0


def test_validation_heads_are_fixed_and_hold_brain_and_background(cache_dir: Path) -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir), "data.heads": "brain"})
    data = load_run_data(config)
    assert data.label_set.name == "brain" and data.heads == "brain"
    images, classes = validation_samples(data, config.generator, 6)
    again_images, again_classes = validation_samples(data, config.generator, 6)
    assert images.shape == (6, 32, 32, 3) and classes.dtype == np.uint8 and set(np.unique(classes)) == {0, 1}
    assert np.array_equal(images, again_images) and np.array_equal(classes, again_classes)


def test_mixed_validation_takes_its_heads_share_from_heads_and_the_rest_from_the_cache(cache_dir: Path) -> None:
    overrides = {**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir), "data.heads": "tissue"}
    mixed = load_run_data(load_config(overrides={**overrides, "data.heads_fraction": 0.5}))
    config = load_config(overrides={**overrides, "data.heads_fraction": 0.5}).generator
    images, classes = validation_samples(mixed, config, 8)
    head_images, head_classes = validation_samples(load_run_data(load_config(overrides=overrides)), config, 4)
    cached_images, cached_classes = validation_samples(load_run_data(load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir)})), config, 4)
    assert images.shape == (8, 32, 32, 3) and classes.dtype == np.uint8
    assert np.array_equal(images[:4], head_images) and np.array_equal(classes[:4], head_classes)  # round(8 * 0.5) from heads
    assert np.array_equal(images[4:], cached_images) and np.array_equal(classes[4:], cached_classes)  # the rest as cached


def test_mixing_cached_subjects_needs_targets_the_cache_holds(cache_dir: Path) -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir), "data.heads": "brain", "data.heads_fraction": 0.5})
    with pytest.raises(ConfigError, match="heads_fraction 1 with data.heads=brain"):
        load_run_data(config)


@pytest.mark.slow
def test_ensemble_members_train_as_separate_jobs_then_bundle(cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir, options = tmp_path / "ensemble", ["--set", "training.epochs=1"]
    assert main(["ensemble", "--label", "CSF", *_options(cache_dir, run_dir, *options)]) == 0
    assert (run_dir / "members" / "csf" / "bundle" / "bundle.json").is_file() and not (run_dir / "bundle").exists()

    caplog.set_level(logging.INFO)
    assert main(["ensemble", *_options(cache_dir, run_dir, *options)]) == 0
    assert "member CSF: already trained and bundled, skipping" in caplog.text
    info = read_bundle_info(run_dir / "bundle")
    assert info.kind == "ensemble" and sorted(m.class_index for m in info.members) == [1, 2, 3]
    assert {"val_dice_csf", "val_dice_gray_matter", "val_dice_white_matter", "val_loss_csf"} <= set(info.metrics)
    assert all(0.0 <= info.metrics[f"val_dice_{name}"] <= 1.0 for name in ("csf", "gray_matter", "white_matter"))


@pytest.mark.slow
def test_a_longer_rerun_continues_epochs_optimizer_and_generator(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    assert main(["multiclass", *_options(cache_dir, run_dir)]) == 0
    saved_iterations, saved_variables = _optimizer_state(run_dir / "checkpoints" / "last.keras")
    assert saved_iterations == 2 * STEPS

    started: dict = {}
    original_fit, original_dataset = keras.Model.fit, training_run.training_dataset

    def recording_fit(model, *args, **kwargs):
        started.update(initial_epoch=kwargs["initial_epoch"], iterations=int(model.optimizer.iterations),
                       variables=[np.array(v) for v in model.optimizer.variables])
        return original_fit(model, *args, **kwargs)

    def recording_dataset(data, config, encoding, initial_epoch):
        started["generator_epoch"] = initial_epoch
        return original_dataset(data, config, encoding, initial_epoch)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    monkeypatch.setattr(training_run, "training_dataset", recording_dataset)
    assert main(["multiclass", *_options(cache_dir, run_dir, "--set", "training.epochs=4")]) == 0

    assert started["initial_epoch"] == 2 and started["generator_epoch"] == 2
    assert started["iterations"] == saved_iterations
    assert len(started["variables"]) == len(saved_variables)
    assert all(np.array_equal(a, b) for a, b in zip(started["variables"], saved_variables))  # Adam moments included
    assert _logged_epochs(run_dir) == [0, 1, 2, 3]
    assert _optimizer_state(run_dir / "checkpoints" / "last.keras")[0] == 4 * STEPS


@pytest.mark.slow
def test_a_killed_run_resumes_after_its_last_checkpoint(cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    state_file = run_dir / "checkpoints" / "state.json"
    command = [sys.executable, "-m", "training", "multiclass", *_options(cache_dir, run_dir, "--set", "training.epochs=100")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 1):
            assert process.poll() is None and time.monotonic() < deadline, "training ended or stalled before epoch 1"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    last = json.loads(state_file.read_text())["epoch"]
    assert last >= 1

    caplog.set_level(logging.INFO)
    assert main(["multiclass", *_options(cache_dir, run_dir, "--set", f"training.epochs={last + 3}")]) == 0
    assert f"resuming at epoch {last + 1} of {last + 3} (optimizer step {(last + 1) * STEPS})" in caplog.text
    assert _logged_epochs(run_dir) == list(range(last + 3))
    assert _optimizer_state(run_dir / "checkpoints" / "last.keras")[0] == (last + 3) * STEPS
    assert not list((run_dir / "checkpoints").glob(".*"))  # no partial file survives the resume


@pytest.mark.slow
def test_deterministic_runs_give_identical_weights(cache_dir: Path, tmp_path: Path) -> None:
    """Two quick runs in one fresh process (op determinism is process-wide, so not in the test process)."""
    script = textwrap.dedent(
        f"""
        from training.cli import main
        for name in ("one", "two"):
            options = ["--quick", "--set", "data.cache_dir={cache_dir}", "--run-dir", "{tmp_path}/" + name,
                       "--set", "training.deterministic=true", "--set", "training.epochs=1"]
            assert main(["multiclass", *options]) == 0
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (keras.models.load_model(tmp_path / name / "checkpoints" / "last.keras") for name in ("one", "two"))
    assert all(np.array_equal(a, b) for a, b in zip(one.get_weights(), two.get_weights()))


# ---------------------------------------------------------------- errors at the boundary


def test_a_bad_label_is_one_line_on_stderr() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "single-class", "--label", "grey matter", "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'grey matter'" in lines[0] and "gray matter" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["single-class", "--label", "background"], "Expected a foreground class"),
        (["ensemble", "--label", "CSF", "--label", "ventricles"], "no class 'ventricles'"),
        (["multiclass", "--set", "training.epochs=0"], "training.epochs >= 1"),
        (["multiclass", "--set", "training.early_stopping_patience=-1"], "early_stopping_patience >= 0"),
        (["multiclass", "--set", "training.strategy=tpu"], "training.strategy"),
    ],
)
def test_bad_arguments_fail_with_status_1(argv: list[str], message: str, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert main([*argv, "--quick", "--run-dir", str(tmp_path / "run")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run").exists()


def test_multiworker_needs_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG is not set"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="Expected TF_CONFIG as JSON"):
        make_strategy("multiworker")


# ---------------------------------------------------------------- units


class _Resolver:
    def __init__(self, cluster: dict, task_type: str | None, task_id: int | None) -> None:
        self.cluster, self.task_type, self.task_id = cluster, task_type, task_id

    def cluster_spec(self):
        import tensorflow as tf

        return tf.train.ClusterSpec(self.cluster)


class _Strategy:
    def __init__(self, resolver: _Resolver | None) -> None:
        self.cluster_resolver = resolver


WORKERS = {"worker": ["a:1", "b:2"]}
WITH_CHIEF = {"chief": ["c:0"], "worker": ["a:1", "b:2"]}


@pytest.mark.parametrize(
    ("resolver", "chief"),
    [
        (None, True),
        (_Resolver({}, None, None), True),
        (_Resolver(WORKERS, "worker", 0), True),
        (_Resolver(WORKERS, "worker", 1), False),
        (_Resolver(WITH_CHIEF, "chief", 0), True),
        (_Resolver(WITH_CHIEF, "worker", 0), False),
    ],
)
def test_the_chief_is_the_chief_task_or_worker_zero(resolver: _Resolver | None, chief: bool) -> None:
    assert is_chief(_Strategy(resolver)) is chief  # type: ignore[arg-type]


def test_checkpoint_state_round_trip_and_refusals(tmp_path: Path) -> None:
    checkpoints = RunCheckpoints(tmp_path / "checkpoints")
    assert checkpoints.read_state() is None
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    state = RunState(epoch=3, best_epoch=1, best_value=0.5, best_logs={"loss": 0.4, "val_loss": 0.5, "val_dice_csf": 0.7})
    checkpoints.save(model, state, improved=True)
    assert checkpoints.read_state() == state
    assert state.validation_metrics() == {"val_loss": 0.5, "val_dice_csf": 0.7}
    assert state.is_complete(4) and not state.is_complete(5) and RunState(0, 0, 1.0, stopped=True).is_complete(9)
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["best.weights.h5", "last.keras", "state.json"]
    checkpoints.best_weights.unlink()
    with pytest.raises(BrainsegError, match="missing best.weights.h5"):
        checkpoints.read_state()
    checkpoints.state_file.write_text("{")
    with pytest.raises(BrainsegError, match="unreadable checkpoint state"):
        checkpoints.read_state()


@pytest.mark.parametrize(("val_loss", "stopped", "best_epoch"), [(0.6, True, 2), (0.4, False, 4)])
def test_early_stopping_continues_the_count_of_a_resumed_run(tmp_path: Path, val_loss: float, stopped: bool, best_epoch: int) -> None:
    """Resumed after epoch 3 with the best at epoch 2 and patience 2: a worse epoch 4 is the second without improvement."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    state = RunState(epoch=3, best_epoch=2, best_value=0.5, best_logs={"val_loss": 0.5})
    checkpoints = RunCheckpoints(tmp_path)
    checkpoints.save(model, state, improved=True)  # what the first run left
    stopper, checkpoint = ResumableEarlyStopping(patience=2, state=state), EpochCheckpoint(checkpoints, state)
    for callback in (stopper, checkpoint):
        callback.set_model(model)
        callback.on_train_begin()
    model.stop_training = False
    for callback in (stopper, checkpoint):
        callback.on_epoch_end(4, {"loss": 0.3, "val_loss": val_loss})
    assert model.stop_training is stopped
    assert checkpoints.read_state() == checkpoint.state
    assert (checkpoint.state.epoch, checkpoint.state.best_epoch, checkpoint.state.stopped) == (4, best_epoch, stopped)


@pytest.mark.parametrize(("last_epoch", "kept"), [(-1, []), (0, [0]), (1, [0, 1]), (5, [0, 1, 2])])
def test_trim_csv_log_keeps_checkpointed_epochs(tmp_path: Path, last_epoch: int, kept: list[int]) -> None:
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    trim_csv_log(path, last_epoch)
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,loss" and [int(line.split(",")[0]) for line in lines[1:]] == kept


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"epochs": 0}, "epochs"),
        ({"early_stopping_patience": -2}, "early_stopping_patience"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"final_learning_rate_fraction": 0.0}, r"final_learning_rate_fraction in \(0, 1\]"),
        ({"final_learning_rate_fraction": 1.5}, r"final_learning_rate_fraction in \(0, 1\]"),
        ({"validation_samples": 0}, "validation_samples"),
    ],
)
def test_training_config_is_checked(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        check_training_config(TrainingConfig(**overrides))


def test_validation_samples_are_fixed_and_shared_by_both_families(cache_dir: Path) -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir), "training.validation_samples": 6})
    data = load_run_data(config)
    images, classes = validation_samples(data, config.generator, 6)
    again_images, again_classes = validation_samples(data, config.generator, 6)
    assert images.shape == (6, 32, 32, 3) and classes.dtype == np.uint8
    assert np.array_equal(images, again_images) and np.array_equal(classes, again_classes)
    softmax = list(validation_dataset(data, config.generator, TargetEncoding.softmax(), 6))
    sigmoid = list(validation_dataset(data, config.generator, TargetEncoding.sigmoid(2), 6))
    assert [len(x) for x, _ in softmax] == [4, 2]  # the last batch is partial, no sample dropped
    for (x_soft, y_soft), (x_sig, y_sig) in zip(softmax, sigmoid):
        assert np.array_equal(x_soft, x_sig) and np.array_equal(np.asarray(y_soft)[..., 2:3], y_sig)


@pytest.mark.parametrize(
    ("predicted", "target", "expected"),
    [
        ([1, 1, 0, 0], [1, 0, 0, 0], {1: 2 / 3, 2: 1.0}),
        ([2, 2, 1, 0], [2, 2, 1, 0], {1: 1.0, 2: 1.0}),
        ([0, 0, 0, 0], [2, 0, 0, 0], {1: 1.0, 2: 0.0}),
    ],
)
def test_dice_scores(predicted: list[int], target: list[int], expected: dict[int, float]) -> None:
    assert dice_scores(np.array(predicted), np.array(target), [1, 2]) == pytest.approx(expected)


def test_slug_names_run_folders() -> None:
    assert training_run.class_slug("gray matter") == "gray_matter" and training_run.class_slug("Left-Cerebral-Cortex") == "left_cerebral_cortex"


def test_config_yaml_warns_when_a_resumed_run_changes_more_than_epochs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(overrides=QUICK_OVERRIDES)
    save_config(tmp_path, config)
    save_config(tmp_path, config.replace({"training.epochs": 9}))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    save_config(tmp_path, config.replace({"model.base_filters": 16, "training.learning_rate": 0.01}))
    assert "model.base_filters, training.learning_rate" in caplog.text
    assert load_config(tmp_path / "config.yaml").model.base_filters == 16


def test_a_random_slice_axis_needs_synthetic_heads() -> None:
    config = load_config(overrides={**QUICK_OVERRIDES, "generator.random_slice_axis": True})
    with pytest.raises(ConfigError, match="random_slice_axis only with synthetic heads"):
        load_run_data(config)


@pytest.mark.parametrize(
    ("schedule", "epoch", "expected"),
    [
        ("constant", 0, 1e-3),
        ("constant", 9, 1e-3),
        ("cosine", 0, 1e-3),  # starts at the rate
        ("cosine", 9, 5e-5),  # ends at rate * final_learning_rate_fraction, exactly at the last epoch
        ("cosine", 12, 5e-5),  # epochs past the end stay there
        ("cosine", 4.5, 0.5 * (1e-3 + 5e-5)),  # half way: the mean of the two
    ],
)
def test_learning_rate_schedule(schedule: str, epoch: float, expected: float) -> None:
    from training.callbacks import learning_rate_at

    training = TrainingConfig(epochs=10, learning_rate=1e-3, learning_rate_schedule=schedule, final_learning_rate_fraction=0.05)
    assert learning_rate_at(epoch, training) == pytest.approx(expected, rel=1e-9)  # type: ignore[arg-type]


def _tiny_bundle(root: Path, family: str, class_index: int | None, seed: int) -> Path:
    from brainseg_tf.bundle import write_model_bundle
    from brainseg_tf.labels import TISSUE
    from brainseg_tf.models import build_segmenter

    config = load_config(overrides=QUICK_OVERRIDES)
    keras.utils.set_random_seed(seed)
    model = build_segmenter(family, (None, None, 3), TISSUE.num_classes, config.model)
    return write_model_bundle(root, model, family=family, label_set=TISSUE, config=config, metrics={}, class_index=class_index)


def test_a_fresh_run_can_start_from_a_bundles_weights(tmp_path: Path) -> None:
    from brainseg_tf.bundle import load_keras_model, write_ensemble_bundle
    from brainseg_tf.labels import TISSUE

    config = load_config(overrides=QUICK_OVERRIDES)
    multiclass = _tiny_bundle(tmp_path / "mc", "multiclass", None, 1)
    plan = training_run.NetworkPlan("multiclass", None, TISSUE, tmp_path / "run", tmp_path / "run" / "bundle")
    fresh = training_run._new_model(plan, config)
    started = training_run._new_model(plan, config.replace({"training.init_from": str(multiclass)}))
    expected = load_keras_model(multiclass).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(started.get_weights(), expected))
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), expected))
    assert started.optimizer is not None  # compiled, ready to train

    members = [_tiny_bundle(tmp_path / f"m{i}", "single_class", i, 10 + i) for i in (1, 2, 3)]
    ensemble = write_ensemble_bundle(tmp_path / "ens", members, label_set=TISSUE, config=config, metrics={})
    member_plan = training_run.NetworkPlan("single_class", 2, TISSUE, tmp_path / "m", tmp_path / "m" / "bundle")
    started = training_run._new_model(member_plan, config.replace({"training.init_from": str(ensemble)}))
    expected = load_keras_model(members[1]).get_weights()  # class 2's member, not another's
    assert all(np.array_equal(a, b) for a, b in zip(started.get_weights(), expected))


def test_starting_from_a_bundle_of_other_networks_is_refused(tmp_path: Path) -> None:
    from brainseg_tf.labels import TISSUE

    config = load_config(overrides=QUICK_OVERRIDES)
    member = _tiny_bundle(tmp_path / "csf", "single_class", 1, 0)
    plan = training_run.NetworkPlan("multiclass", None, TISSUE, tmp_path / "run", tmp_path / "run" / "bundle")
    with pytest.raises(ConfigError, match="init_from to hold a multiclass network"):
        training_run._new_model(plan, config.replace({"training.init_from": str(member)}))
    wider = config.replace({"model.base_filters": 8, "training.init_from": str(_tiny_bundle(tmp_path / "mc", "multiclass", None, 0))})
    with pytest.raises(ConfigError, match="this run's architecture"):
        training_run._new_model(plan, wider)
