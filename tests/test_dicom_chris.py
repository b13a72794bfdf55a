"""Both plugins as ChRIS runs them (another UID, no network, read-only input) on the embedded head as a DICOM
series nested among NIfTI files: a label map, volumes, QC picture and DICOM SEG, the NIfTI route's labels."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from chris_harness import PluginEnvironment, install_plugins, make_read_only, run_as_chris, shared_folder
from test_dicom_inference import PACS_FOLDER, PATIENT_MARKERS

from brainseg_tf.dicom import find_series, load_series, read_seg
from brainseg_tf.dicom.synthetic import write_series
from brainseg_tf.geometry import reorient
from brainseg_tf.io import Image, load_label_map, save_volume
from brainseg_tf.labels import TISSUE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to another UID and network namespace needs root (CI runs as root)"),
]
USED: list[Path] = []


@pytest.fixture(scope="module")
def plugins() -> Iterator[PluginEnvironment]:
    yield install_plugins()
    for folder in USED:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def dicom_tree() -> Path:
    """in/<PACS-style folders>/t1/slice-*.dcm: the MNI152 T1 as axial slices, and the same voxels as in/nifti/mni152.nii.gz; read-only."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    root = shared_folder("brainseg-dicom-in-")
    USED.append(root)
    written = write_series(Image(np.asarray(template.dataobj, np.float32), template.affine), root / PACS_FOLDER / "t1", series_number=5)
    (root / "nifti").mkdir()
    save_volume(written.image, root / "nifti" / "mni152.nii.gz")
    make_read_only(root)
    return root


@pytest.mark.parametrize("family", ["multiclass", "ensemble"])
def test_a_dicom_series_goes_through_the_plugin_to_labels_volumes_qc_and_seg(plugins: PluginEnvironment, dicom_tree: Path, family: str) -> None:
    out, tmp = shared_folder("brainseg-dicom-out-"), shared_folder("brainseg-dicom-tmp-")
    USED.extend([out, tmp])
    [series] = find_series(dicom_tree / PACS_FOLDER)
    run = run_as_chris(plugins, family, ["--dicom-seg"], dicom_tree, out, tmp)
    assert run.returncode == 0, run.stdout + run.stderr
    folder = out / PACS_FOLDER / "t1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{series.stem}_{s}" for s in ("labels.nii.gz", "qc.png", "seg.dcm", "volumes.csv", "volumes.json"))
    dicom_labels, nifti_labels = load_label_map(folder / f"{series.stem}_labels.nii.gz"), load_label_map(out / "nifti" / "mni152_labels.nii.gz")
    assert np.array_equal(reorient(dicom_labels)[0].array, reorient(nifti_labels)[0].array)  # 0 voxels differ
    source = load_series(series)
    assert np.array_equal(TISSUE.to_values(read_seg(folder / f"{series.stem}_seg.dcm", source.image).array), dicom_labels.array)
    assert series.key in run.stdout and "summary: 2 of 2 file(s) segmented" in run.stdout
    assert not any(marker in run.stdout + run.stderr for marker in PATIENT_MARKERS)
