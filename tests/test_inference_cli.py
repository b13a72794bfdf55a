"""`python -m inference` with the committed bundles: the MNI152 T1 in two storage orders, bad inputs, tampered models."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest
from test_io import BAD_INPUTS
from toy_volumes import toy_brain

from brainseg_tf.geometry import reorient
from brainseg_tf.io import Volume, load_image, load_label_map, save_volume
from inference.cli import main

ROOT = Path(__file__).resolve().parents[1]
MULTICLASS, ENSEMBLE = ROOT / "models" / "tissue-multiclass", ROOT / "models" / "tissue-ensemble"


@pytest.fixture(scope="module")
def mni_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MNI152 T1 as shipped (RAS .nii.gz) and the same voxels stored LIA in an MGZ in a subfolder."""
    from nilearn import datasets

    folder = tmp_path_factory.mktemp("mni")
    template = datasets.load_mni152_template(resolution=1)
    image = Volume(np.asarray(template.dataobj, np.float32), template.affine)
    save_volume(image, folder / "mni152.nii.gz")
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(("L", "I", "A")))
    lia = Volume(np.ascontiguousarray(nio.apply_orientation(image.array, transform)), image.affine @ nio.inv_ornt_aff(transform, image.shape))
    (folder / "lia").mkdir()
    save_volume(lia, folder / "lia" / "mni152_lia.mgz")
    return folder


def _outputs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.parametrize("bundle", [MULTICLASS, ENSEMBLE], ids=["multiclass", "ensemble"])
def test_the_mni152_t1_is_segmented_on_its_own_grid_in_any_storage_order(bundle: Path, mni_inputs: Path, tmp_path: Path) -> None:
    assert main(["--model", str(bundle), str(mni_inputs), "--output-dir", str(tmp_path)]) == 0
    assert _outputs(tmp_path) == [
        "lia/mni152_lia_labels.mgz", "lia/mni152_lia_qc.png", "lia/mni152_lia_volumes.csv", "lia/mni152_lia_volumes.json",
        "mni152_labels.nii.gz", "mni152_qc.png", "mni152_volumes.csv", "mni152_volumes.json",
    ]
    ras_image = load_image(mni_inputs / "mni152.nii.gz")
    ras = load_label_map(tmp_path / "mni152_labels.nii.gz")
    lia = load_label_map(tmp_path / "lia" / "mni152_lia_labels.mgz")
    assert ras.shape == ras_image.shape and np.allclose(ras.affine, ras_image.affine)
    assert lia.shape == load_image(mni_inputs / "lia" / "mni152_lia.mgz").shape
    # Same voxels, same conformed grid: the LIA result reoriented back is the RAS result, voxel for voxel.
    assert np.array_equal(reorient(lia)[0].array, ras.array)
    counts = np.bincount(ras.array.ravel(), minlength=4)
    brain_ml = counts[1:].sum() / 1000
    assert 1000 < brain_ml < 2000 and counts[2] > counts[1] and counts[3] > counts[1]  # an adult brain, mostly GM and WM


@pytest.mark.slow
def test_bad_inputs_fail_one_line_each_and_leave_no_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    bad = []
    for number, (_, build, loader, _) in enumerate(BAD_INPUTS):
        if loader is load_image:
            case = inputs / f"case{number}"
            case.mkdir()
            built = build(case)  # renamed uniquely (same suffix), so no two cases share output names
            unique = built.with_name(f"case{number}_{built.name}")
            bad.append(built.rename(unique) if built.exists() else unique)
    good = save_volume(Volume(toy_brain(0), np.eye(4)), inputs / "good.nii.gz")
    flat = save_volume(Volume(np.ones((20, 22, 18), np.float32), np.eye(4)), inputs / "flat.nii.gz")
    bad.append(flat)
    status = main(["--model", str(MULTICLASS), *map(str, [*bad, good]), "--output-dir", str(out), "--no-qc"])
    assert status == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == len(bad)
    for path in bad:
        (line,) = [e for e in errors if e.startswith(f"{path}: ")]
        assert len(line) > len(str(path)) + 5, line
    assert _outputs(out) == ["good_labels.nii.gz", "good_volumes.csv", "good_volumes.json"]


@pytest.mark.slow
def test_a_tampered_model_is_refused_before_loading(tmp_path: Path, mni_inputs: Path, caplog: pytest.LogCaptureFixture) -> None:
    bundle = Path(shutil.copytree(MULTICLASS, tmp_path / "bundle"))
    variables = next((bundle / "saved_model" / "variables").glob("variables.data-*"))
    data = bytearray(variables.read_bytes())
    data[len(data) // 2] ^= 0xFF
    variables.write_bytes(bytes(data))
    status = main(["--model", str(bundle), str(mni_inputs / "mni152.nii.gz"), "--output-dir", str(tmp_path / "out")])
    assert status == 1
    assert "sha256" in caplog.text and str(variables.relative_to(bundle)) in caplog.text
    assert not (tmp_path / "out").exists()


def test_two_inputs_writing_one_output_are_refused_before_anything_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("scan.nii", "scan.nii.gz"):
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / name)
    status = main(["--model", str(MULTICLASS), str(tmp_path / "scan.nii"), str(tmp_path / "scan.nii.gz"), "--format", "mgz", "--output-dir", str(tmp_path / "out")])
    assert status == 1 and "both write" in caplog.text
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_is_one_failure_among_good_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    good = save_volume(Volume(toy_brain(1), np.eye(4)), tmp_path / "good.nii")
    assert main(["--model", str(MULTICLASS), str(tmp_path / "empty"), str(good), "--output-dir", str(tmp_path / "out"), "--no-qc"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"{tmp_path / 'empty'}: no .nii.gz, .nii, .mgz file in this folder"]
    assert _outputs(tmp_path / "out") == ["good_labels.nii", "good_volumes.csv", "good_volumes.json"]


@pytest.mark.parametrize("affine", [np.eye(4), np.diag([1.0, 1.0, 1.5, 1.0])], ids=["1 mm", "resampled"])
def test_probability_maps_are_written_when_asked_and_agree_with_the_labels(affine: np.ndarray, tmp_path: Path) -> None:
    from brainseg_tf.labels import TISSUE

    image = toy_brain(2)
    scan = save_volume(Volume(image, affine), tmp_path / "scan.nii.gz")
    assert main(["--model", str(MULTICLASS), str(scan), "--output-dir", str(tmp_path / "out"), "--no-qc", "--probabilities"]) == 0
    probabilities = nib.load(tmp_path / "out" / "scan_probabilities.nii.gz")
    labels = load_label_map(tmp_path / "out" / "scan_labels.nii.gz")
    assert probabilities.shape == (*image.shape, TISSUE.num_classes) and np.allclose(probabilities.affine, affine)
    scores = np.asarray(probabilities.dataobj, np.float32)
    assert np.allclose(scores.sum(axis=-1), 1.0, atol=1e-4)
    assert np.array_equal(TISSUE.to_values(np.argmax(scores, axis=-1)), labels.array)


def test_a_model_failing_mid_run_is_one_line_naming_the_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A network whose outputs do not fit its contract is the bundle's fault: one line naming it, the run stops."""
    import inference.cli as cli
    from brainseg_tf.labels import TISSUE
    from brainseg_tf.preprocessing import InputSpec, Preprocessing, SliceReader
    from inference.heads import Network, SoftmaxHead
    from inference.inferers import SliceInferer
    from inference.predict import SliceSpec
    from inference.segmenter import Segmenter

    def wrong_shape(batch: np.ndarray) -> np.ndarray:
        return np.zeros((*batch.shape[:3], 1), np.float32)  # one channel where the contract says four

    broken = tmp_path / "broken-bundle"
    network = Network(wrong_shape, SliceInferer(SliceSpec(2, 1, 8, 4), batch_size=4, workers=1), broken)
    segmenter = Segmenter(SoftmaxHead((network,), workers=1), TISSUE, InputSpec(Preprocessing(1.0, 0.5, 99.5), SliceReader(2, 1), 8))
    monkeypatch.setattr(cli.Segmenter, "from_bundle", classmethod(lambda cls, path, settings=None: segmenter))
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        save_volume(Volume(rng.random((16, 16, 16), dtype=np.float32), np.eye(4)), tmp_path / "in" / name)

    assert main([str(tmp_path / "in"), "--model", str(broken), "--output-dir", str(tmp_path / "out"), "--no-qc"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{broken}: ") and "a.nii.gz" not in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii.gz"))
