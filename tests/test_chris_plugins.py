"""Both ChRIS plugins run as ChRIS runs them, on the real MNI152 T1 (and an MGZ copy deep in a folder tree).

See `chris_harness` for the conditions: another UID with group 0, no capabilities, no network, input
read-only, HOME unset or unwritable, an otherwise empty environment.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest
from chris_harness import PluginEnvironment, files_owned_by_run_uid, install_plugins, make_read_only, run_as_chris, shared_folder

from brainseg_tf.datasets import embedded
from brainseg_tf.io import load_label_map
from brainseg_tf.scoring import dice_scores

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to another UID and network namespace needs root (CI runs as root)"),
]

IDENTIFIERS = (b"Doe^Jane", b"MRN0042", b"secret-extension")
"""Header text planted in the input: must reach neither logs nor outputs."""
USED_FOLDERS: list[Path] = []


@pytest.fixture(scope="module")
def plugins() -> Iterator[PluginEnvironment]:
    """The installed plugins; every folder the module's runs used is removed at the end, pass or fail."""
    yield install_plugins()
    for folder in USED_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def _mni152_with_identifiers() -> nib.Nifti1Image:
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    image = nib.Nifti1Image(np.asarray(template.dataobj, np.float32), template.affine)
    image.header["descrip"] = IDENTIFIERS[0]
    image.header["db_name"] = IDENTIFIERS[1]
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, IDENTIFIERS[2]))
    return image


def _lia_mgz(image: nib.Nifti1Image) -> nib.MGHImage:
    transform = nio.ornt_transform(nio.io_orientation(image.affine), nio.axcodes2ornt(("L", "I", "A")))
    array = nio.apply_orientation(np.asarray(image.dataobj), transform)
    return nib.MGHImage(np.ascontiguousarray(array), image.affine @ nio.inv_ornt_aff(transform, image.shape))


@pytest.fixture(scope="module")
def mni_tree() -> Path:
    """in/mni152.nii.gz (with identifiers in its header) and in/site/session 1/mni152_lia.mgz, read-only."""
    root = _folder("brainseg-in-")
    image = _mni152_with_identifiers()
    nib.save(image, root / "mni152.nii.gz")
    (root / "site" / "session 1").mkdir(parents=True)
    nib.save(_lia_mgz(image), root / "site" / "session 1" / "mni152_lia.mgz")
    make_read_only(root)
    return root


def _folder(prefix: str) -> Path:
    folder = shared_folder(prefix)
    USED_FOLDERS.append(folder)
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _reference_tissue(shape: tuple[int, ...]) -> np.ndarray:
    template = embedded.load_template(1.0)
    labels = embedded.tissue_labels(template.gray_matter, template.white_matter, template.brain_mask)
    assert labels.shape == shape
    return labels


def _assert_no_identifiers(texts: list[str], folder: Path) -> None:
    for text in texts:
        assert not any(marker.decode() in text for marker in IDENTIFIERS)
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            data = gzip.decompress(data) if path.name.endswith((".gz", ".mgz")) else data
            assert not any(marker in data for marker in IDENTIFIERS), path


@pytest.mark.parametrize(("family", "home"), [("multiclass", None), ("ensemble", "/")], ids=["multiclass-no-home", "ensemble-unwritable-home"])
def test_plugin_segments_every_volume_as_chris_runs_it(plugins: PluginEnvironment, mni_tree: Path, family: str, home: str | None) -> None:
    out, tmp = _folder("brainseg-out-"), _folder("brainseg-tmp-")
    run = run_as_chris(plugins, family, [], mni_tree, out, tmp, home=home)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _files(out) == [
        "mni152_labels.nii.gz", "mni152_qc.png", "mni152_volumes.csv", "mni152_volumes.json",
        "site/session 1/mni152_lia_labels.mgz", "site/session 1/mni152_lia_qc.png",
        "site/session 1/mni152_lia_volumes.csv", "site/session 1/mni152_lia_volumes.json",
    ]
    labels = load_label_map(out / "mni152_labels.nii.gz")
    assert labels.shape == nib.load(mni_tree / "mni152.nii.gz").shape
    assert np.allclose(labels.affine, nib.load(mni_tree / "mni152.nii.gz").affine)
    dice = dice_scores(labels.array, _reference_tissue(labels.shape), [1, 2, 3])
    assert dice[2] > 0.8 and dice[3] > 0.8, dice  # the clean template: CSF is out of distribution (see docs/comparison.md)
    assert "summary: 2 of 2 file(s) segmented" in run.stdout and "structures found: CSF, gray matter, white matter" in run.stdout
    assert run.stderr == ""  # the environment was prepared before TensorFlow and matplotlib were imported: no notices, no warnings
    _assert_no_identifiers([run.stdout, run.stderr], out)


def test_no_matching_input_fails_in_one_line_and_writes_nothing(plugins: PluginEnvironment, mni_tree: Path) -> None:
    out, tmp = _folder("brainseg-out-"), _folder("brainseg-tmp-")
    run = run_as_chris(plugins, "ensemble", ["--pattern", "**/*.nii,*.mgz"], mni_tree, out, tmp, home="/")
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"{mni_tree}: no input matches --pattern '**/*.nii,*.mgz'"]
    assert _files(out) == []


def test_a_corrupt_volume_fails_alone_and_leaves_nothing(plugins: PluginEnvironment, mni_tree: Path) -> None:
    inputs, out, tmp = _folder("brainseg-in-"), _folder("brainseg-out-"), _folder("brainseg-tmp-")
    shutil.copy(mni_tree / "mni152.nii.gz", inputs / "good.nii.gz")
    (inputs / "deep").mkdir()
    (inputs / "deep" / "corrupt.nii.gz").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = (mni_tree / "site" / "session 1" / "mni152_lia.mgz").read_bytes()
    (inputs / "deep" / "cut.mgz").write_bytes(whole[: len(whole) // 3])
    make_read_only(inputs)
    run = run_as_chris(plugins, "multiclass", ["--no-qc"], inputs, out, tmp)
    assert run.returncode == 1
    assert _files(out) == ["good_labels.nii.gz", "good_volumes.csv", "good_volumes.json"]
    errors = run.stderr.strip().splitlines()
    assert len(errors) == 2, run.stderr
    assert errors[0].startswith("deep/corrupt.nii.gz: ") and errors[1].startswith("deep/cut.mgz: truncated")
    assert "summary: 1 of 3 file(s) segmented" in run.stdout


def test_nothing_was_written_outside_the_output_and_temp_folders(plugins: PluginEnvironment) -> None:
    outputs_and_temps = [f for f in USED_FOLDERS if f.name.startswith(("brainseg-out-", "brainseg-tmp-"))]
    assert len(outputs_and_temps) >= 4, "run after the plugin tests of this module"
    assert files_owned_by_run_uid(outputs_and_temps) == []
