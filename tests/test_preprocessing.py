"""The typed input contract (`brainseg_tf.preprocessing`): bundle.json round trips, refusals, one recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.config import Config
from brainseg_tf.datasets import prepare_subject
from brainseg_tf.io import Image, LabelMap
from brainseg_tf.labels import TISSUE
from brainseg_tf.preprocessing import INPUT_SPEC_KEYS, InputSpec, PatchReader, Preprocessing, SliceReader

MODELS = Path(__file__).resolve().parents[1] / "models"
DEFAULT_SPEC = {
    "orientation": "RAS", "voxel_size": 1.0, "lower_percentile": 0.5, "upper_percentile": 99.5, "mode": "slices",
    "slice_axis": 2, "context": 1, "channels": 3, "pad_multiple": 16, "patch_shape": None, "context_padding": "zeros",
}  # fmt: skip


def test_from_config_writes_the_format_1_input_spec() -> None:
    spec = InputSpec.from_config(Config())
    assert spec.to_dict() == DEFAULT_SPEC and list(spec.to_dict()) == list(INPUT_SPEC_KEYS)
    assert spec.reader == SliceReader(2, 1) and spec.pad_multiple == 16 and spec.voxel_size == 1.0
    patches = InputSpec.from_config(Config().replace({"generator.mode": "patches", "generator.patch_shape": [32, 32, 32]}))
    as_dict = patches.to_dict()
    assert (as_dict["channels"], as_dict["patch_shape"], as_dict["slice_axis"], as_dict["context"]) == (1, [32, 32, 32], None, None)
    assert patches.reader == PatchReader((32, 32, 32))


@pytest.mark.parametrize("config", [Config(), Config().replace({"generator.mode": "patches", "generator.patch_shape": [32, 16, 48]})])
def test_bundle_json_round_trip(config: Config) -> None:
    spec = InputSpec.from_config(config)
    stored = json.loads(json.dumps(spec.to_dict()))
    assert InputSpec.from_dict(stored) == spec and InputSpec.from_dict(stored).to_dict() == stored


@pytest.mark.parametrize("bundle", ["tissue-multiclass", "tissue-ensemble", "tissue-ensemble/members/csf"])
def test_the_committed_bundles_input_specs_read_back_exactly(bundle: str) -> None:
    stored = json.loads((MODELS / bundle / "bundle.json").read_text())["input_spec"]
    assert InputSpec.from_dict(stored).to_dict() == stored


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": None}, "mode"),
        ({"mode": "volumes"}, "mode"),
        ({"orientation": "LPS"}, "orientation"),
        ({"context_padding": "edge"}, "context_padding"),
        ({"channels": 5}, "channels 3"),
        ({"slice_axis": 3}, "slice_axis"),
        ({"slice_axis": True}, "slice_axis"),
        ({"context": -1}, "context"),
        ({"context": "1"}, "context"),
        ({"pad_multiple": 0}, "pad_multiple"),
        ({"voxel_size": 0.0}, "voxel_size"),
        ({"voxel_size": float("nan")}, "voxel_size"),
        ({"lower_percentile": 99.5, "upper_percentile": 0.5}, "lower_percentile < upper_percentile"),
        ({"upper_percentile": 101.0}, "upper_percentile"),
        ({"mode": "patches", "channels": 1, "patch_shape": [32, 32, 24]}, "multiples of pad_multiple=16"),
        ({"mode": "patches", "channels": 1, "patch_shape": [32, 32]}, "patch_shape"),
    ],
)
def test_from_dict_refuses_what_the_contract_cannot_honour(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InputSpec.from_dict({**DEFAULT_SPEC, **change})


def test_from_dict_names_missing_keys() -> None:
    data = {k: v for k, v in DEFAULT_SPEC.items() if k not in ("context", "pad_multiple")}
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['context', 'pad_multiple'\]"):
        InputSpec.from_dict(data)
    with pytest.raises(ValueError, match="object"):
        InputSpec.from_dict([])  # type: ignore[arg-type]


def _head(shape: tuple[int, int, int] = (12, 10, 8)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.random(shape, dtype=np.float32) * 100
    labels = (image > 50).astype(np.int32) * 3
    return image, labels


def test_prepare_conforms_and_normalises_and_maps_back() -> None:
    image, _ = _head()
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: reoriented, not resampled
    prepared = Preprocessing(1.0, 0.5, 99.5).prepare(Image(image, affine))
    assert prepared.array.dtype == np.float32 and 0.0 <= prepared.array.min() and prepared.array.max() <= 1.0
    assert prepared.inverse.only_reorients
    np.testing.assert_array_equal(prepared.inverse(prepared.array, "linear").array, prepared.array[::-1])


def test_prepare_refuses_a_label_map_and_labels_are_never_interpolated() -> None:
    image, labels = _head()
    recipe = Preprocessing(0.5, 0.5, 99.5)
    with pytest.raises(ValueError, match="Expected an Image"):
        recipe.prepare(LabelMap(labels, np.eye(4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected a LabelMap"):
        recipe.prepare_label_map(Image(image, np.eye(4)))  # type: ignore[arg-type]
    upsampled = recipe.prepare_label_map(LabelMap(labels, np.eye(4)))
    assert upsampled.shape == (24, 20, 16) and set(np.unique(upsampled.array)) == {0, 3}


def test_dataset_preparation_and_inference_prepare_an_image_alike() -> None:
    """Training data is made by the same recipe inference applies to a scan (one spelling of it)."""
    image, labels = _head((14, 12, 10))
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    config = Config()
    subject = prepare_subject("s", Image(image, affine), LabelMap(labels, affine), TISSUE, config.preprocess, "train")
    prepared = InputSpec.from_config(config).prepare(Image(image, affine))
    np.testing.assert_array_equal(subject.image, prepared.array)
    np.testing.assert_array_equal(subject.affine, prepared.inverse.conformed_grid.affine)
