"""Label sets: stored values <-> class indices, unknown values, left/right pairs, colours, definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainseg_tf.errors import LabelError
from brainseg_tf.labels import ASEG, BRAIN, LABEL_SETS, STRUCTURES, TISSUE, LabelSet, get_label_set

SHAPE = (5, 6, 7)


@pytest.mark.parametrize("label_set", [TISSUE, ASEG, STRUCTURES], ids=lambda s: s.name)
def test_values_to_classes_and_back_is_the_identity(label_set: LabelSet) -> None:
    stored = np.random.default_rng(0).choice(np.asarray(label_set.values), size=SHAPE).astype(np.int32)
    classes = label_set.to_classes(stored)
    assert classes.dtype == np.uint8
    assert classes.shape == SHAPE
    assert classes.max() < label_set.num_classes
    values = label_set.to_values(classes)
    assert values.dtype == np.int32
    np.testing.assert_array_equal(values, stored)


@pytest.mark.parametrize("label_set", [TISSUE, ASEG, STRUCTURES], ids=lambda s: s.name)
def test_classes_to_values_and_back_is_the_identity(label_set: LabelSet) -> None:
    classes = np.arange(label_set.num_classes)
    np.testing.assert_array_equal(label_set.to_classes(label_set.to_values(classes)), classes)
    assert label_set.foreground_classes == tuple(range(1, label_set.num_classes))


def test_aseg_maps_known_freesurfer_ids() -> None:
    stored = np.array([0, 2, 3, 17, 41, 53, 60])
    classes = ASEG.to_classes(stored)
    assert [ASEG.names[c] for c in classes] == [
        "Unknown",
        "Left-Cerebral-White-Matter",
        "Left-Cerebral-Cortex",
        "Left-Hippocampus",
        "Right-Cerebral-White-Matter",
        "Right-Hippocampus",
        "Right-VentralDC",
    ]
    assert ASEG.num_classes == 33


@pytest.mark.parametrize("label_set", [TISSUE, ASEG, STRUCTURES], ids=lambda s: s.name)
def test_unknown_values_raise_naming_them(label_set: LabelSet) -> None:
    stored = np.zeros(SHAPE, dtype=np.int32)
    stored[0, 0, 0], stored[1, 1, 1], stored[2, 2, 2] = 77, 1001, 77
    with pytest.raises(LabelError) as caught:
        label_set.to_classes(stored)
    message = str(caught.value)
    assert "77, 1001" in message
    assert label_set.name in message
    assert "\n" not in message


def test_many_unknown_values_are_listed_briefly() -> None:
    with pytest.raises(LabelError, match=r"100, 101, .* 109 \.\.\.") as caught:
        TISSUE.to_classes(np.arange(100, 130))
    assert "110" not in str(caught.value)


def test_unknown_values_can_map_to_background() -> None:
    stored = np.array([[0, 2, 99], [3, -4, 1]])
    classes = TISSUE.to_classes(stored, unknown="background")
    np.testing.assert_array_equal(classes, [[0, 2, 0], [3, 0, 1]])


def test_unknown_policy_is_checked_even_without_unknown_values() -> None:
    with pytest.raises(LabelError, match="unknown='ignore'"):
        TISSUE.to_classes(np.array([0, 1]), unknown="ignore")  # type: ignore[arg-type]


def test_to_values_refuses_out_of_range_and_non_integer_classes() -> None:
    with pytest.raises(LabelError, match=r"\[0, 3\]"):
        TISSUE.to_values(np.array([0, 4]))
    with pytest.raises(LabelError, match=r"\[0, 3\]"):
        TISSUE.to_values(np.array([-1, 2]))
    with pytest.raises(LabelError, match="integer"):
        TISSUE.to_values(np.array([0.0, 1.0]))
    assert TISSUE.to_values(np.zeros((0,), dtype=np.int64)).shape == (0,)


def test_large_label_sets_use_int32_classes() -> None:
    values = tuple(range(300))
    big = LabelSet("big", values, tuple(f"class {v}" for v in values))
    classes = big.to_classes(np.array([0, 299, 150]))
    assert classes.dtype == np.int32
    np.testing.assert_array_equal(classes, [0, 299, 150])


def test_unsorted_values_map_to_their_own_classes() -> None:
    labels = LabelSet("unsorted", (0, 30, 10, 20), ("bg", "c", "a", "b"))
    np.testing.assert_array_equal(labels.to_classes(np.array([10, 20, 30, 0])), [2, 3, 1, 0])
    np.testing.assert_array_equal(labels.to_values(np.array([2, 3, 1, 0])), [10, 20, 30, 0])


def test_aseg_pairs_every_left_structure_with_its_right_twin() -> None:
    lefts = {i for i, n in enumerate(ASEG.names) if n.startswith("Left-")}
    rights = {i for i, n in enumerate(ASEG.names) if n.startswith("Right-")}
    assert len(ASEG.lr_pairs) == len(lefts) == len(rights) == 14
    for left, right in ASEG.lr_pairs:
        assert ASEG.names[left].startswith("Left-")
        assert ASEG.names[right] == "Right-" + ASEG.names[left][len("Left-") :]
    assert {p[0] for p in ASEG.lr_pairs} == lefts
    assert {p[1] for p in ASEG.lr_pairs} == rights


@pytest.mark.parametrize("label_set", [TISSUE, ASEG, STRUCTURES], ids=lambda s: s.name)
def test_flip_permutation_is_an_involution(label_set: LabelSet) -> None:
    permutation = label_set.flip_permutation()
    assert sorted(permutation) == list(range(label_set.num_classes))
    np.testing.assert_array_equal(permutation[permutation], np.arange(label_set.num_classes))


def test_flip_permutation_swaps_left_and_right_and_keeps_midline() -> None:
    permutation = ASEG.flip_permutation()
    assert permutation[ASEG.class_index("Left-Hippocampus")] == ASEG.class_index("Right-Hippocampus")
    assert permutation[ASEG.class_index("Right-Putamen")] == ASEG.class_index("Left-Putamen")
    for midline in ("Unknown", "Brain-Stem", "3rd-Ventricle", "CSF"):
        assert permutation[ASEG.class_index(midline)] == ASEG.class_index(midline)
    np.testing.assert_array_equal(TISSUE.flip_permutation(), np.arange(4))


def test_class_index_by_name() -> None:
    assert TISSUE.class_index("white matter") == 3
    assert TISSUE.class_index("GRAY MATTER") == 2
    assert ASEG.class_index("Left-Cerebral-Cortex") == 2
    with pytest.raises(LabelError, match="no class 'thalamus'"):
        TISSUE.class_index("thalamus")


def test_get_label_set_by_name() -> None:
    assert get_label_set("tissue") is TISSUE
    assert get_label_set("aseg") is ASEG
    assert get_label_set("structures") is STRUCTURES
    assert get_label_set("brain").names == ("background", "brain")
    assert set(LABEL_SETS) == {"tissue", "brain", "aseg", "structures"}
    with pytest.raises(LabelError, match="'dkt'"):
        get_label_set("dkt")


@pytest.mark.parametrize("label_set", [TISSUE, ASEG, STRUCTURES], ids=lambda s: s.name)
def test_dict_round_trip_through_json(label_set: LabelSet) -> None:
    assert LabelSet.from_dict(json.loads(json.dumps(label_set.to_dict()))) == label_set


BAD_DEFINITIONS = [
    ("count mismatch", dict(values=(0, 1, 2), names=("bg", "a")), "3 values but 2 names"),
    ("repeated values", dict(values=(0, 1, 1), names=("bg", "a", "b")), "repeat"),
    ("no background", dict(values=(1, 2), names=("a", "b")), "background"),
    ("background only", dict(values=(0,), names=("bg",)), "at least one class"),
    ("repeated names", dict(values=(0, 1, 2), names=("bg", "Cortex", "cortex")), "names repeat"),
    ("pair out of range", dict(values=(0, 1, 2), names=("bg", "l", "r"), lr_pairs=((1, 3),)), "(1, 3)"),
    ("pair with background", dict(values=(0, 1, 2), names=("bg", "l", "r"), lr_pairs=((0, 1),)), "(0, 1)"),
    ("class paired with itself", dict(values=(0, 1, 2), names=("bg", "l", "r"), lr_pairs=((1, 1),)), "(1, 1)"),
    (
        "class in two pairs",
        dict(values=(0, 1, 2, 3), names=("bg", "l", "r", "x"), lr_pairs=((1, 2), (2, 3))),
        "more than one",
    ),
    ("too few colours", dict(values=(0, 1, 2), names=("bg", "a", "b"), colors=((0, 0, 0), (1, 2, 3))), "per class (3). Received: 2"),
    ("colour above 255", dict(values=(0, 1), names=("bg", "a"), colors=((0, 0, 0), (256, 0, 0))), "class 1 ('a')"),
    ("negative colour", dict(values=(0, 1), names=("bg", "a"), colors=((0, 0, -1), (0, 0, 0))), "Received: (0, 0, -1)"),
    ("two channels", dict(values=(0, 1), names=("bg", "a"), colors=((0, 0, 0), (9, 9))), "three integers in [0, 255]"),
    ("float channel", dict(values=(0, 1), names=("bg", "a"), colors=((0, 0, 0), (0.5, 0, 0))), "three integers"),
    ("boolean channel", dict(values=(0, 1), names=("bg", "a"), colors=((0, 0, 0), (True, 0, 0))), "three integers"),
]


@pytest.mark.parametrize(("definition", "phrase"), [c[1:] for c in BAD_DEFINITIONS], ids=[c[0] for c in BAD_DEFINITIONS])
def test_bad_definitions_raise(definition: dict, phrase: str) -> None:
    with pytest.raises(LabelError) as caught:
        LabelSet(name="broken", **definition)
    assert phrase in str(caught.value)
    assert "'broken'" in str(caught.value)


def test_structures_are_the_aseg_classes_with_freesurfer_colours() -> None:
    assert STRUCTURES.name == "structures"
    assert (STRUCTURES.values, STRUCTURES.names, STRUCTURES.lr_pairs) == (ASEG.values, ASEG.names, ASEG.lr_pairs)
    assert STRUCTURES.num_classes == 33
    assert ASEG.colors == () and TISSUE.colors == () and BRAIN.colors == ()
    assert STRUCTURES != ASEG  # another name and a colour table: caches of one never pass for the other


# FreeSurferColorLUT.txt (FreeSurfer 7) colours of a few structures, including the edge values 0 and 255.
KNOWN_COLOURS = [
    ("Unknown", (0, 0, 0)),
    ("Left-Hippocampus", (220, 216, 20)),
    ("Right-Hippocampus", (220, 216, 20)),
    ("Left-Cerebral-White-Matter", (245, 245, 245)),
    ("Right-Cerebral-White-Matter", (245, 245, 245)),
    ("Left-Cerebral-Cortex", (205, 62, 78)),
    ("Left-Lateral-Ventricle", (120, 18, 134)),
    ("Left-Thalamus", (0, 118, 14)),
    ("Left-Pallidum", (12, 48, 255)),
    ("Right-Pallidum", (13, 48, 255)),
    ("Right-Amygdala", (103, 255, 255)),
    ("Right-Accumbens-area", (255, 165, 0)),
    ("Brain-Stem", (119, 159, 176)),
    ("CSF", (60, 60, 60)),
]


@pytest.mark.parametrize(("name", "rgb"), KNOWN_COLOURS)
def test_structures_use_freesurfer_colours(name: str, rgb: tuple[int, int, int]) -> None:
    assert STRUCTURES.colors[STRUCTURES.class_index(name)] == rgb


def test_every_structure_has_a_valid_colour() -> None:
    assert len(STRUCTURES.colors) == STRUCTURES.num_classes
    for rgb in STRUCTURES.colors:
        assert len(rgb) == 3 and all(type(c) is int and 0 <= c <= 255 for c in rgb)
    foreground = STRUCTURES.colors[1:]
    assert (0, 0, 0) not in foreground  # black is background's alone
    for left, right in STRUCTURES.lr_pairs:  # FreeSurfer colours both sides alike, but for the pallidum's 12/13
        difference = np.abs(np.subtract(STRUCTURES.colors[left], STRUCTURES.colors[right])).sum()
        assert difference <= 1, (STRUCTURES.names[left], STRUCTURES.colors[left], STRUCTURES.colors[right])


def test_structures_flip_pairs_swap_every_side() -> None:
    permutation = STRUCTURES.flip_permutation()
    assert len(STRUCTURES.lr_pairs) == 14
    for left, right in STRUCTURES.lr_pairs:
        assert STRUCTURES.names[right] == "Right-" + STRUCTURES.names[left][len("Left-") :]
        assert (permutation[left], permutation[right]) == (right, left)
    unpaired = [STRUCTURES.names[c] for c in range(STRUCTURES.num_classes) if permutation[c] == c]
    assert unpaired == ["Unknown", "3rd-Ventricle", "4th-Ventricle", "Brain-Stem", "CSF"]
    stored = np.array([17, 53, 16, 0, 2])  # hippocampi, brainstem, background, left WM
    flipped = STRUCTURES.to_values(permutation[STRUCTURES.to_classes(stored)])
    np.testing.assert_array_equal(flipped, [53, 17, 16, 0, 41])


def test_colours_survive_the_dict_round_trip_and_are_optional() -> None:
    data = json.loads(json.dumps(STRUCTURES.to_dict()))
    assert data["colors"][STRUCTURES.class_index("Left-Hippocampus")] == [220, 216, 20]
    assert LabelSet.from_dict(data) == STRUCTURES
    for uncoloured in (TISSUE, BRAIN, ASEG):  # descriptions as bundles and caches stored them before colours
        assert "colors" not in uncoloured.to_dict()
        assert set(uncoloured.to_dict()) == {"name", "values", "names", "lr_pairs"}
    without = {key: value for key, value in STRUCTURES.to_dict().items() if key != "colors"}
    loaded = LabelSet.from_dict(without)
    assert loaded.colors == () and loaded.values == STRUCTURES.values and loaded != STRUCTURES


def test_colours_are_stored_as_plain_integer_tuples() -> None:
    labels = LabelSet("lists", (0, 1), ("bg", "a"), colors=[[0, 0, 0], (np.uint8(255), np.int64(0), 7)])  # type: ignore[arg-type]
    assert labels.colors == ((0, 0, 0), (255, 0, 7))
    assert all(type(c) is int for rgb in labels.colors for c in rgb)
    assert LabelSet("empty", (0, 1), ("bg", "a"), colors=[]).colors == ()  # type: ignore[arg-type]
