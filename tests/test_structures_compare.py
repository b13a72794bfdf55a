"""`python -m evaluation compare-structures`: structures bundles against atlas recall, per structure."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from brainseg_tf.bundle import write_model_bundle
from brainseg_tf.config import QUICK_OVERRIDES, load_config
from brainseg_tf.errors import ConfigError
from brainseg_tf.labels import STRUCTURES, TISSUE
from brainseg_tf.models import build_segmenter
from evaluation.cli import build_parser
from evaluation.structures_compare import (
    STRUCTURES_MARKERS,
    StructuresOptions,
    _scores,
    run_structures_comparison,
    structure_cases,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):
    return load_config(overrides={**QUICK_OVERRIDES, "data.label_set": "structures", "data.cache_dir": str(tmp_path_factory.mktemp("cache"))})


def _bundle(path: Path, config, label_set=STRUCTURES) -> Path:
    keras.utils.set_random_seed(0)
    model = build_segmenter("multiclass", (None, None, 3), label_set.num_classes, config.model)
    return write_model_bundle(path, model, family="multiclass", label_set=label_set, config=config, metrics={})


def test_cases_are_each_held_out_subject_stripped_and_as_a_full_head(config) -> None:
    cases = list(structure_cases(config, None, True, 0))
    assert [c.kind for c in cases] == ["stripped", "full head"] and cases[0].name.endswith("-stripped")
    stripped, head = cases
    assert stripped.reference.shape == stripped.image.shape and np.all(stripped.image.array[stripped.reference == 0] == 0)
    assert head.image.array.size > stripped.image.array.size and np.count_nonzero(head.image.array[head.reference == 0]) > 0
    assert np.bincount(head.reference.ravel(), minlength=33)[1:].tolist() == np.bincount(stripped.reference.ravel(), minlength=33)[1:].tolist()
    again = list(structure_cases(config, None, True, 0))[1]
    assert np.array_equal(again.image.array, head.image.array)  # seeded
    assert list(structure_cases(config, 1, False, 0))[0].kind == "stripped" and len(list(structure_cases(config, 1, False, 0))) == 1
    with pytest.raises(ConfigError, match="data.label_set structures"):
        next(structure_cases(config.replace({"data.label_set": "tissue"}), None, True, 0))


def test_scores_of_a_perfect_and_of_an_empty_prediction() -> None:
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[2:6, 2:6, 2:6] = STRUCTURES.class_index("Left-Hippocampus")
    reference[6:10, 6:10, 6:10] = STRUCTURES.class_index("Right-Putamen")
    perfect = _scores(reference, reference, (1.0, 1.0, 2.0))
    assert perfect["Left-Hippocampus"] == {"dice": 1.0, "hd95": 0.0, "volume": 0.0}
    assert perfect["CSF"]["dice"] == 1.0 and np.isnan(perfect["CSF"]["volume"])  # absent from both
    from brainseg_tf.scoring import hausdorff95

    shifted = np.roll(reference, 2, axis=0)
    cropped = _scores(shifted, reference, (1.0, 1.0, 2.0))["Right-Putamen"]["hd95"]
    assert cropped == hausdorff95(shifted, reference, STRUCTURES.class_index("Right-Putamen"), (1.0, 1.0, 2.0)) > 0  # the box changes nothing
    empty = _scores(np.zeros_like(reference), reference, (1.0, 1.0, 2.0))
    assert empty["Right-Putamen"]["dice"] == 0.0 and empty["Right-Putamen"]["volume"] == -1.0 and empty["Right-Putamen"]["hd95"] == float("inf")


def test_the_comparison_scores_every_method_and_rewrites_its_section(config, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "structures-mc", config)
    doc = tmp_path / "page.md"
    doc.write_text(f"# Page\n\nkept\n\n{STRUCTURES_MARKERS[0]}\nold\n{STRUCTURES_MARKERS[1]}\n\nalso kept\n")
    options = StructuresOptions((bundle,), None, True, 0, doc, tmp_path / "out", "python -m evaluation compare-structures --bundle x")
    results = run_structures_comparison(config, options)
    methods = {(r["case"].rsplit("-", 1)[-1] if r["kind"] == "stripped" else "head", r["method"]) for r in results["rows"]}
    assert {("stripped", "atlas placed"), ("stripped", "atlas moments"), ("stripped", "structures-mc (multiclass)"),
            ("head", "atlas placed"), ("head", "structures-mc (multiclass)")} == methods  # no extractor: no mask for moments on a head
    row = next(r for r in results["rows"] if r["method"] == "structures-mc (multiclass)")
    assert set(row["structures"]) == set(STRUCTURES.names[1:]) and row["seconds"] > 0
    text = doc.read_text()
    assert text.startswith("# Page\n\nkept\n") and text.rstrip().endswith("also kept") and "old" not in text
    assert "| Left-Hippocampus |" in text and "| **mean, subcortical 16** |" in text and "structures above atlas moments" in text
    assert (tmp_path / "out" / "results.json").is_file()


def test_bundles_of_another_label_set_are_refused(config, tmp_path: Path) -> None:
    tissue = _bundle(tmp_path / "tissue", config.replace({"data.label_set": "tissue"}), TISSUE)
    with pytest.raises(ConfigError, match="bundles on the structures label set. Received: 'tissue'"):
        run_structures_comparison(config, StructuresOptions((tissue,), doc=tmp_path / "p.md", output_dir=tmp_path / "o"))
    with pytest.raises(ConfigError, match="at least one structures bundle"):
        run_structures_comparison(config, StructuresOptions((), doc=tmp_path / "p.md", output_dir=tmp_path / "o"))


def test_the_subcommand_parses_its_options() -> None:
    args = build_parser().parse_args(["compare-structures", "--bundle", "a", "--bundle", "b", "--subjects", "2", "--no-heads", "--seed", "3"])
    assert (args.bundles, args.subjects, args.heads, args.seed) == ([Path("a"), Path("b")], 2, False, 3)
    assert str(args.doc) == "docs/structures.md"
