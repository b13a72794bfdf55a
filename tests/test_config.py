"""The typed config: defaults, YAML files, dotted overrides, validation and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brainseg_tf.config import (
    QUICK_OVERRIDES,
    Config,
    GeneratorConfig,
    PreprocessConfig,
    default_cache_dir,
    from_dict,
    load_config,
)
from brainseg_tf.errors import ConfigError


def _write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_load() -> None:
    config = load_config()
    assert config == Config()
    assert config.preprocess.voxel_size == 1.0
    assert config.generator.mode == "slices"
    assert config.generator.slice_shape == (128, 128)
    assert config.generator.channels == 3
    assert config.model.positive_weight is None
    assert config.data.label_set == "tissue"


def test_yaml_file_overrides_only_its_keys(tmp_path: Path) -> None:
    path = _write_yaml(
        tmp_path / "run.yaml",
        {"generator": {"batch_size": 8, "slice_shape": [64, 96], "augment": {"noise_std": 0.0}}, "preprocess": {"voxel_size": 2}},
    )
    config = load_config(path)
    assert config.generator.batch_size == 8
    assert config.generator.slice_shape == (64, 96)
    assert config.generator.augment.noise_std == 0.0
    assert config.generator.augment.flip_probability == 0.5  # untouched sibling keeps its default
    assert config.preprocess.voxel_size == 2.0 and isinstance(config.preprocess.voxel_size, float)
    assert config.model == Config().model


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert load_config(path) == Config()


def test_dotted_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "run.yaml", {"generator": {"batch_size": 8, "seed": 3}})
    config = load_config(path, {"generator.batch_size": 2, "model.positive_weight": 4, "data.cache_dir": tmp_path})
    assert config.generator.batch_size == 2
    assert config.generator.seed == 3
    assert config.model.positive_weight == 4.0
    assert config.data.cache_dir == str(tmp_path)
    assert config.data.resolved_cache_dir() == tmp_path


def test_a_section_override_merges_into_the_section(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "run.yaml", {"generator": {"augment": {"noise_std": 0.5}}})
    config = load_config(path, {"generator.augment": {"flip_probability": 0.0}})
    assert config.generator.augment.flip_probability == 0.0
    assert config.generator.augment.noise_std == 0.5


def test_quick_overrides_apply() -> None:
    config = load_config(overrides=QUICK_OVERRIDES)
    assert config.data.embedded.n_train == 3
    assert config.data.embedded.n_val == 1 and config.data.embedded.n_test == 1
    assert config.preprocess.voxel_size == 3.0
    assert config.data.embedded.template_voxel_size == 3.0
    assert config.generator.slice_shape == (32, 32)
    assert config.generator.patch_shape == (16, 16, 16)
    assert config.generator.batch_size == 4
    assert config.generator.samples_per_epoch == 16
    assert Config().replace(QUICK_OVERRIDES) == config


def test_replace_returns_a_changed_copy() -> None:
    original = Config()
    changed = original.replace({"generator.mode": "patches", "preprocess.upper_percentile": 99.0})
    assert changed.generator.mode == "patches" and changed.generator.channels == 1
    assert changed.preprocess.upper_percentile == 99.0
    assert original == Config()


def test_dict_round_trip_through_yaml(tmp_path: Path) -> None:
    config = Config().replace({"generator.slice_shape": [48, 40], "model.positive_weight": 2.5, "data.manifest": "a.csv"})
    data = config.to_dict()
    assert data["generator"]["slice_shape"] == [48, 40]
    assert from_dict(Config, data) == config
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path) == config


UNKNOWN_KEYS = [
    ("top-level override", None, {"trainer.epochs": 3}, "trainer.epochs"),
    ("nested override", None, {"generator.batchsize": 3}, "generator.batchsize"),
    ("deep override", None, {"generator.augment.flip": 0.1}, "generator.augment.flip"),
    ("file section", {"trainer": {"epochs": 3}}, None, "trainer"),
    ("file key", {"generator": {"batchsize": 3}}, None, "generator.batchsize"),
    ("file deep key", {"data": {"embedded": {"n_subjects": 3}}}, None, "data.embedded.n_subjects"),
    ("file integer key", {"generator": {1: 3}}, None, "generator.1"),
    ("key under a value", None, {"generator.batch_size.value": 3}, "generator.batch_size.value"),
]


@pytest.mark.parametrize(("file_data", "overrides", "key"), [c[1:] for c in UNKNOWN_KEYS], ids=[c[0] for c in UNKNOWN_KEYS])
def test_unknown_keys_raise_naming_the_key(tmp_path: Path, file_data: dict | None, overrides: dict | None, key: str) -> None:
    path = _write_yaml(tmp_path / "run.yaml", file_data) if file_data is not None else None
    with pytest.raises(ConfigError, match="Unknown config key") as caught:
        load_config(path, overrides)
    assert key in str(caught.value)


WRONG_TYPES = [
    ("generator.batch_size", "eight"),
    ("generator.batch_size", 2.5),
    ("generator.batch_size", True),
    ("generator.batch_size", None),
    ("preprocess.voxel_size", [1, 1, 1]),
    ("preprocess.voxel_size", False),
    ("generator.mode", "volumes"),
    ("data.unknown_labels", "ignore"),
    ("generator.slice_shape", [32, 32, 32]),
    ("generator.slice_shape", 32),
    ("generator.patch_shape", [16, "x", 16]),
    ("data.label_set", ["tissue"]),
    ("data.manifest", {"path": "a.csv"}),
    ("model.positive_weight", "heavy"),
    ("generator", 5),
    ("generator.augment", [0.5]),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES, ids=[f"{k}={v!r}" for k, v in WRONG_TYPES])
def test_wrongly_typed_values_raise_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={key: value})
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)


def test_wrongly_typed_values_in_a_file_raise_naming_the_key(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "run.yaml", {"generator": {"augment": {"noise_std": "loud"}}})
    with pytest.raises(ConfigError, match="generator.augment.noise_std"):
        load_config(path)


def test_string_numbers_from_the_command_line_are_converted() -> None:
    config = load_config(overrides={"generator.batch_size": "8", "preprocess.voxel_size": "1.5", "generator.seed": 4.0})
    assert config.generator.batch_size == 8 and isinstance(config.generator.batch_size, int)
    assert config.preprocess.voxel_size == 1.5
    assert config.generator.seed == 4 and isinstance(config.generator.seed, int)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [("generator: [unclosed\n  - x: {", "cannot read config"), ("- just\n- a list\n", "expected a mapping")],
    ids=["bad yaml", "not a mapping"],
)
def test_unreadable_files_raise_one_line(tmp_path: Path, text: str, phrase: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert phrase in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["missing.yaml", "binary.yaml"])
def test_missing_or_binary_files_raise(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "binary.yaml":
        path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(ConfigError, match="cannot read config") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_from_dict_checks_nested_sections() -> None:
    assert from_dict(PreprocessConfig, {"voxel_size": 2}) == PreprocessConfig(voxel_size=2.0)
    assert from_dict(GeneratorConfig, {"augment": {"noise_std": 0.0}}).augment.noise_std == 0.0
    with pytest.raises(ConfigError, match="augment.noisy"):
        from_dict(GeneratorConfig, {"augment": {"noisy": 0.0}})


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINSEG_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("BRAINSEG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "brainseg-tf"
    assert Config().data.resolved_cache_dir() == tmp_path / "xdg" / "brainseg-tf"


def test_a_tuple_of_any_length_takes_a_list_of_any_length_and_checks_each_item() -> None:
    assert Config().replace({"inference.extraction_axes": [0, 1]}).inference.extraction_axes == (0, 1)
    assert Config().replace({"inference.extraction_axes": []}).inference.extraction_axes == ()  # emptiness is the user's check
    with pytest.raises(ConfigError, match="inference.extraction_axes as a list. Received: 5"):
        Config().replace({"inference.extraction_axes": 5})
    with pytest.raises(ConfigError, match="inference.extraction_axes as int. Received: 0.5"):
        Config().replace({"inference.extraction_axes": [0, 0.5]})
