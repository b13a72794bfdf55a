"""Volume I/O: round trips, clean headers, atomic writes and the table of bad inputs."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg_tf import io as volume_io
from brainseg_tf.errors import VolumeError
from brainseg_tf.io import Volume, check_header, load_image, load_label_map, save_volume, volume_suffix

SHAPE = (6, 7, 8)
SUFFIXES = (".nii", ".nii.gz", ".mgz")


def _affine() -> np.ndarray:
    """Permuted, flipped, anisotropic and shifted: every value exact in float32."""
    return np.array(
        [
            [0.0, -1.5, 0.0, 20.25],
            [0.0, 0.0, 2.0, -10.5],
            [0.75, 0.0, 0.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _image_array(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, _affine() if affine is None else affine), path)
    return path


def _write_raw_nifti(path: Path, header: nib.Nifti1Header, data: bytes) -> Path:
    """Header block, 4 bytes of (empty) extension flag, then ``data``; gzip by suffix."""
    raw = header.binaryblock + b"\0" * 4 + data
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as stream:
        stream.write(raw)
    return path


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_image_round_trip(tmp_path: Path, suffix: str) -> None:
    original = Volume(_image_array(), _affine())
    path = save_volume(original, tmp_path / f"image{suffix}")
    loaded = load_image(path)
    assert loaded.array.dtype == np.float32
    assert loaded.shape == SHAPE
    np.testing.assert_array_equal(loaded.array, original.array)
    np.testing.assert_allclose(loaded.affine, original.affine, atol=1e-5)
    np.testing.assert_allclose(loaded.voxel_size, [0.75, 1.5, 2.0], atol=1e-6)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("values", [(0, 2, 41, 60), (0, 3, 1000, -5), (0, 1, 70000)], ids=["uint8", "int16", "int32"])
def test_label_round_trip(tmp_path: Path, suffix: str, values: tuple[int, ...]) -> None:
    labels = np.random.default_rng(1).choice(np.asarray(values, dtype=np.int64), size=SHAPE)
    path = save_volume(Volume(labels, _affine()), tmp_path / f"labels{suffix}", kind="label")
    loaded = load_label_map(path)
    assert loaded.array.dtype == np.int32
    np.testing.assert_array_equal(loaded.array, labels)
    np.testing.assert_allclose(loaded.affine, _affine(), atol=1e-5)


def test_image_with_integer_storage_loads_as_float32(tmp_path: Path) -> None:
    stored = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    loaded = load_image(_write_nifti(tmp_path / "int.nii.gz", stored))
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, stored.astype(np.float32))


@pytest.mark.parametrize("loader", [load_image, load_label_map])
def test_4d_with_one_frame_is_accepted_as_3d(tmp_path: Path, loader) -> None:
    array = np.random.default_rng(2).integers(0, 4, size=SHAPE).astype(np.int16)
    loaded = loader(_write_nifti(tmp_path / "one_frame.nii.gz", array[..., None]))
    assert loaded.array.shape == SHAPE
    np.testing.assert_array_equal(loaded.array, array)


def test_label_map_with_float_storage_of_integers_is_accepted(tmp_path: Path) -> None:
    labels = np.random.default_rng(3).integers(0, 5, size=SHAPE).astype(np.float32)
    loaded = load_label_map(_write_nifti(tmp_path / "float_labels.nii.gz", labels))
    assert loaded.array.dtype == np.int32
    np.testing.assert_array_equal(loaded.array, labels.astype(np.int32))


def test_suffix_is_case_insensitive() -> None:
    assert volume_suffix("scan.NII.GZ") == ".nii.gz"
    assert volume_suffix(Path("dir.nii") / "aseg.mgz") == ".mgz"


# --- clean headers ------------------------------------------------------------------------


def test_save_writes_a_clean_header(tmp_path: Path) -> None:
    source = nib.Nifti1Image(_image_array(), _affine())
    source.header["descrip"] = b"patient John Doe, scanned 2020-01-01"
    source.header["db_name"] = b"hospital-db"
    source.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"private note"))
    nib.save(source, tmp_path / "input.nii.gz")
    written = nib.load(tmp_path / "input.nii.gz").header
    assert written["descrip"].item() and written["db_name"].item() and len(written.extensions) == 1

    save_volume(load_image(tmp_path / "input.nii.gz"), tmp_path / "output.nii.gz")
    header = nib.load(tmp_path / "output.nii.gz").header
    assert header["descrip"].item() == b""
    assert header["db_name"].item() == b""
    assert len(header.extensions) == 0
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    assert header.get_xyzt_units()[0] == "mm"


# --- atomic writes -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_leaves_no_temporary_files(tmp_path: Path, suffix: str) -> None:
    save_volume(Volume(_image_array(), _affine()), tmp_path / f"out{suffix}")
    save_volume(Volume(_image_array(4), _affine()), tmp_path / f"out{suffix}")  # overwrite
    assert sorted(os.listdir(tmp_path)) == [f"out{suffix}"]
    np.testing.assert_array_equal(load_image(tmp_path / f"out{suffix}").array, _image_array(4))


def _failing_save(image: nib.spatialimages.SpatialImage, filename: Path) -> None:
    Path(filename).write_bytes(b"half a volume")  # a partial temporary, as a crash would leave
    raise OSError(28, "No space left on device")


def test_failed_save_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nib, "save", _failing_save)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(VolumeError, match="cannot write") as caught:
        save_volume(Volume(_image_array(), _affine()), target)
    assert str(target) in str(caught.value)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_volume(Volume(_image_array(), _affine()), tmp_path / "out.nii.gz")
    before = target.read_bytes()
    monkeypatch.setattr(nib, "save", _failing_save)
    with pytest.raises(VolumeError):
        save_volume(Volume(_image_array(5), _affine()), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.nii.gz"]


def test_save_refuses_non_integer_labels_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="non-integer"):
        save_volume(Volume(np.full(SHAPE, 1.5), _affine()), tmp_path / "labels.nii.gz", kind="label")
    with pytest.raises(VolumeError, match="kind"):
        save_volume(Volume(_image_array(), _affine()), tmp_path / "x.nii.gz", kind="images")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_volume_refuses_bad_affines_and_arrays() -> None:
    with pytest.raises(ValueError, match="4x4"):
        Volume(_image_array(), np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        Volume(_image_array(), np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="ndim"):
        Volume(np.zeros((4, 4)), np.eye(4))


# --- bad inputs ----------------------------------------------------------------------------


def _truncated_nii_gz(tmp_path: Path) -> Path:
    whole = _write_nifti(tmp_path / "whole.nii.gz", _image_array()).read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _truncated_nii_gz_header(tmp_path: Path) -> Path:
    whole = _write_nifti(tmp_path / "whole.nii.gz", _image_array()).read_bytes()
    path = tmp_path / "stub.nii.gz"
    path.write_bytes(whole[:40])
    return path


def _truncated_nii(tmp_path: Path) -> Path:
    whole = _write_nifti(tmp_path / "whole.nii", _image_array()).read_bytes()
    path = tmp_path / "truncated.nii"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _truncated_nii_header(tmp_path: Path) -> Path:
    whole = _write_nifti(tmp_path / "whole.nii", _image_array()).read_bytes()
    path = tmp_path / "stub.nii"
    path.write_bytes(whole[:200])
    return path


def _truncated_mgz(tmp_path: Path) -> Path:
    path = save_volume(Volume(_image_array(), _affine()), tmp_path / "whole.mgz")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _random_bytes(name: str):
    def build(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(7).bytes(4096))
        return path

    return build


def _image_2d(tmp_path: Path) -> Path:
    return _write_nifti(tmp_path / "slice.nii.gz", _image_array(shape=(8, 9)))


def _image_flat_3d(tmp_path: Path) -> Path:
    return _write_nifti(tmp_path / "flat.nii.gz", _image_array(shape=(8, 9, 1)))


def _image_4d(tmp_path: Path) -> Path:
    return _write_nifti(tmp_path / "frames.nii.gz", _image_array(shape=(*SHAPE, 3)))


def _image_nan(tmp_path: Path) -> Path:
    array = _image_array()
    array[1, 2, 3] = np.nan
    array[2, 2, 2] = np.inf
    return _write_nifti(tmp_path / "nan.nii.gz", array)


def _absurd_dims(name: str):
    def build(tmp_path: Path) -> Path:
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_data_shape((30000, 30000, 30000))
        header.set_sform(np.eye(4), code=1)
        return _write_raw_nifti(tmp_path / name, header, _image_array().tobytes())

    return build


def _affine_with(name: str, srow_x: list[float]):
    def build(tmp_path: Path) -> Path:
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_data_shape(SHAPE)
        header.set_sform(np.eye(4), code=1)
        header["srow_x"] = srow_x
        return _write_raw_nifti(tmp_path / name, header, _image_array().tobytes())

    return build


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.nii.gz"
    path.touch()
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.nii.gz"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.nii"
    path.mkdir()
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a volume")
    return path


def _labels_non_integer(tmp_path: Path) -> Path:
    return _write_nifti(tmp_path / "soft_labels.nii.gz", np.full(SHAPE, 0.5, dtype=np.float32))


def _labels_nan(tmp_path: Path) -> Path:
    labels = np.ones(SHAPE, dtype=np.float32)
    labels[0, 0, 0] = np.nan
    return _write_nifti(tmp_path / "nan_labels.nii.gz", labels)


def _labels_scaled(tmp_path: Path) -> Path:
    image = nib.Nifti1Image(np.full(SHAPE, 3, dtype=np.int16), _affine())
    image.header.set_slope_inter(0.5, 0.0)  # stored 3 reads as 1.5
    nib.save(image, tmp_path / "scaled_labels.nii.gz")
    return tmp_path / "scaled_labels.nii.gz"


BAD_INPUTS = [
    ("truncated .nii.gz", _truncated_nii_gz, load_image, "truncated"),
    ("truncated .nii.gz header", _truncated_nii_gz_header, load_image, "truncated"),
    ("truncated .nii", _truncated_nii, load_image, "truncated"),
    ("truncated .nii header", _truncated_nii_header, load_image, "truncated"),
    ("truncated .mgz", _truncated_mgz, load_image, "truncated"),
    ("random bytes .nii.gz", _random_bytes("noise.nii.gz"), load_image, "not a readable .nii.gz"),
    ("random bytes .nii", _random_bytes("noise.nii"), load_image, "not a readable .nii"),
    ("garbage .mgz", _random_bytes("noise.mgz"), load_image, "not a readable .mgz"),
    ("2D image", _image_2d, load_image, "2D"),
    ("single slice", _image_flat_3d, load_image, "2D"),
    ("4D with 3 frames", _image_4d, load_image, "4D with 3 frames"),
    ("4D label map", _image_4d, load_label_map, "4D with 3 frames"),
    ("NaN voxels", _image_nan, load_image, "2 voxels are NaN"),
    ("absurd dims .nii", _absurd_dims("huge.nii"), load_image, "limit"),
    ("absurd dims .nii.gz", _absurd_dims("huge.nii.gz"), load_image, "limit"),
    ("non-finite affine", _affine_with("nan_affine.nii.gz", [np.nan, 0, 0, 0]), load_image, "non-finite"),
    ("singular affine", _affine_with("flat_affine.nii.gz", [0, 0, 0, 0]), load_image, "singular"),
    ("empty file", _empty, load_image, "empty"),
    ("missing file", _missing, load_image, "no such file"),
    ("directory", _directory, load_image, "not a regular file"),
    ("unsupported suffix", _text_file, load_image, "unsupported"),
    ("non-integer labels", _labels_non_integer, load_label_map, "non-integer"),
    ("scaled non-integer labels", _labels_scaled, load_label_map, "non-integer"),
    ("NaN labels", _labels_nan, load_label_map, "NaN"),
]


@pytest.mark.parametrize(("build", "loader", "phrase"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_one_line_volume_error(tmp_path: Path, build, loader, phrase: str) -> None:
    path = build(tmp_path)
    with pytest.raises(VolumeError) as caught:
        loader(path)
    error = caught.value
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert phrase.lower() in message.lower()
    assert error.path == str(path)
    assert "Traceback" not in message
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_absurd_dims_are_refused_from_the_header_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    path = _absurd_dims(name)(tmp_path)
    assert path.stat().st_size < 2000

    def read_voxels(*args: object) -> None:
        raise AssertionError("voxels were read before the header check")

    monkeypatch.setattr(volume_io, "_read_voxels", read_voxels)
    with pytest.raises(VolumeError, match="limit"):
        check_header(path)
    with pytest.raises(VolumeError, match="limit"):
        load_label_map(path)


def test_check_header_honours_a_custom_voxel_limit(tmp_path: Path) -> None:
    path = _write_nifti(tmp_path / "small.nii.gz", _image_array())
    image = check_header(path, max_voxels=int(np.prod(SHAPE)))
    assert image.shape == SHAPE
    with pytest.raises(VolumeError, match=f"{np.prod(SHAPE)} voxels, above the limit of 100"):
        check_header(path, max_voxels=100)
    with pytest.raises(VolumeError, match="limit"):
        load_image(path, max_voxels=100)
