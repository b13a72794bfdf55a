"""The comparison job: its page update, its cases, its place apart from training, and one end-to-end run on the committed bundles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.config import QUICK_OVERRIDES, load_config
from brainseg_tf.datasets import embedded
from brainseg_tf.errors import BrainsegError
from brainseg_tf.labels import TISSUE
from evaluation.compare import TEMPLATE_CASE, build_cases
from evaluation.report import BEGIN_MARKER, END_MARKER, update_doc

ROOT = Path(__file__).resolve().parents[1]


def test_update_doc_replaces_only_the_generated_part(tmp_path: Path) -> None:
    page = tmp_path / "comparison.md"
    page.write_text(f"# Title\n\nintro\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\n## Reading\n\nhand-written\n")
    update_doc(page, "new table\n")
    assert page.read_text() == f"# Title\n\nintro\n\n{BEGIN_MARKER}\nnew table\n{END_MARKER}\n\n## Reading\n\nhand-written\n"


def test_update_doc_creates_a_missing_page_and_appends_missing_markers(tmp_path: Path) -> None:
    created = tmp_path / "docs" / "new.md"
    update_doc(created, "table")
    text = created.read_text()
    assert text.startswith("# ") and f"{BEGIN_MARKER}\ntable\n{END_MARKER}" in text and "## Reading" in text
    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("# Notes\n\nkeep me\n")
    update_doc(unmarked, "table")
    assert unmarked.read_text() == f"# Notes\n\nkeep me\n\n{BEGIN_MARKER}\ntable\n{END_MARKER}\n"


@pytest.mark.parametrize("body", [f"{BEGIN_MARKER}\nonly begins\n", f"{END_MARKER}\n{BEGIN_MARKER}\n", f"{BEGIN_MARKER}{END_MARKER}{BEGIN_MARKER}{END_MARKER}"])
def test_update_doc_refuses_broken_markers(tmp_path: Path, body: str) -> None:
    page = tmp_path / "broken.md"
    page.write_text(body)
    with pytest.raises(BrainsegError, match="markers"):
        update_doc(page, "table")
    assert page.read_text() == body  # left as it was


def test_cases_are_the_test_subjects_on_their_native_grids_plus_the_template(tmp_path: Path) -> None:
    config = load_config(None, QUICK_OVERRIDES)  # one test subject at 3 mm
    cases = build_cases(config, subjects=None, template=True, folder=tmp_path)
    assert [(c.case_id, c.group) for c in cases] == [("mni-004", "test"), (TEMPLATE_CASE, "template")]
    template = embedded.load_template(config.data.embedded.template_voxel_size)
    _, label_map = embedded.synthesize_subject(template, 4, config.data.embedded)
    assert np.array_equal(cases[0].reference, TISSUE.to_classes(label_map.array))
    with np.load(cases[0].image_file) as saved:
        assert np.allclose(saved["affine"], label_map.affine) and saved["array"].shape == label_map.shape
    assert cases[1].voxel_size == (3.0, 3.0, 3.0) and set(np.unique(cases[1].reference)) == {0, 1, 2, 3}
    assert np.array_equal(cases[1].reference > 0, template.brain_mask)


def _imported_packages(folder: Path) -> dict[Path, set[str]]:
    """Top-level packages each module under ``folder`` imports, function-local imports included."""
    found = {}
    for source in sorted(folder.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        found[source.relative_to(ROOT)] = {name.split(".")[0] for name in names}
    return found


@pytest.mark.parametrize(("folder", "forbidden"), [("training", {"inference", "evaluation"}), ("brainseg_tf", {"training", "inference", "evaluation"}),
                                                   ("inference", {"training", "evaluation"}), ("evaluation", {"training"})])
def test_packages_meet_only_in_the_library(folder: str, forbidden: set[str]) -> None:
    """Training and inference share only brainseg_tf and the bundle format; evaluation scores bundles through inference."""
    offenders = {str(path): sorted(names & forbidden) for path, names in _imported_packages(ROOT / folder).items() if names & forbidden}
    assert offenders == {}


@pytest.mark.slow
def test_make_compare_writes_page_chart_and_results(tmp_path: Path) -> None:
    page, chart, output = tmp_path / "comparison.md", tmp_path / "comparison.png", tmp_path / "out"
    page.write_text(f"# Comparison\n\n{BEGIN_MARKER}\nstale numbers\n{END_MARKER}\n\n## Reading\n\nkept as written\n")
    command = [
        sys.executable, "-m", "evaluation", "compare", "--config", "configs/train-default.yaml", "--subjects", "1", "--no-template",
        "--doc", str(page), "--chart", str(chart), "--output-dir", str(output),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    text = page.read_text()
    assert "stale numbers" not in text and text.endswith("## Reading\n\nkept as written\n")
    generated = text.split(BEGIN_MARKER)[1].split(END_MARKER)[0]
    assert "| multi-class (softmax U-Net) |" in generated and "Gaussian mixture" in generated and "comparison.png" in generated
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((output / "results.json").read_text())
    assert results["command"].startswith("python -m evaluation compare --config configs/train-default.yaml")
    assert [c["case"] for c in results["cases"]] == ["mni-025"]
    scores = {s["method"]: s for s in results["scores"]}
    assert set(scores) == {m["name"] for m in results["methods"]} and len(scores) == 4
    assert all(dice > 0.6 for dice in scores["multi-class (softmax U-Net)"]["dice"].values()), scores
    assert all(0 <= hd95 < 20 for hd95 in scores["multi-class (softmax U-Net)"]["hd95_mm"].values()), scores
    assert all(m["peak_rss_kib"] > 0 and len(m["seconds"]) == 1 for m in results["methods"])
