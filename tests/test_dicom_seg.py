"""DICOM SEG out: a label map on a series' grid written with highdicom, read back by highdicom and by pydicom
to the same label map; it references its source series and names and colours the label set's classes."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_dicom_series import GEOMETRIES, head_image

from brainseg_tf.dicom import find_series, load_series, read_seg, write_seg
from brainseg_tf.dicom.segments import segment_style
from brainseg_tf.dicom.synthetic import write_series
from brainseg_tf.errors import VolumeError
from brainseg_tf.io import LabelMap
from brainseg_tf.labels import ASEG, TISSUE


def _labels_of(image) -> LabelMap:
    """Tissue-like classes from the head's intensities, with one empty slice (an omitted SEG frame)."""
    array = np.digitize(image.array, [150.0, 325.0, 750.0]).astype(np.uint8)
    array[:, :, 2] = 0
    return LabelMap(array, image.affine)


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
@pytest.mark.parametrize("geometry", ["oblique", "reversed-slices", "sagittal-1x1x3"])
def test_a_seg_round_trips_to_the_same_label_map_on_the_source_grid(geometry: str, multiframe: bool, tmp_path: Path) -> None:
    write_series(head_image(GEOMETRIES[geometry]), tmp_path / "series", series_number=7, multiframe=multiframe, reverse_instances=True)
    source = load_series(find_series(tmp_path / "series")[0])
    labels = _labels_of(source.image)
    path = write_seg(labels, TISSUE, source, tmp_path / "out" / "seg.dcm", "tissue-multiclass")

    back = read_seg(path, source.image)  # pydicom only
    assert np.array_equal(back.array, labels.array) and np.allclose(back.affine, source.image.affine)

    seg = hd.seg.segread(path)
    assert seg.SeriesNumber == 1007 and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series.uid
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["CSF", "gray matter", "white matter"]
    assert [int(d.SegmentNumber) for d in seg.SegmentSequence] == [1, 2, 3]
    assert np.array_equal(_highdicom_labels(seg, source), labels.array)  # highdicom reads the same label map
    assert not list((tmp_path / "out").glob(".*"))  # nothing staged is left behind


def _highdicom_labels(seg: hd.seg.Segmentation, source) -> np.ndarray:
    """The label map highdicom reads from a SEG, per source slice (or frame), on the source's (column, row, slice) grid."""
    if source.multiframe:
        frames = seg.get_pixels_by_source_frame(
            str(source.datasets[0].SOPInstanceUID), [p.frame + 1 for p in source.planes], combine_segments=True, assert_missing_frames_are_empty=True
        )
    else:
        uids = [str(source.datasets[p.source].SOPInstanceUID) for p in source.planes]
        frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    return np.transpose(frames, (2, 1, 0))


def test_the_seg_carries_the_source_identifiers_codes_and_colours(tmp_path: Path) -> None:
    write_series(head_image(GEOMETRIES["ras-like"]), tmp_path / "series")
    source = load_series(find_series(tmp_path / "series")[0])
    path = write_seg(_labels_of(source.image), TISSUE, source, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    reference = source.datasets[0]
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "FrameOfReferenceUID"):
        assert seg[keyword].value == reference[keyword].value, keyword
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY" and seg.SeriesInstanceUID != reference.SeriesInstanceUID
    grey = seg.SegmentSequence[1]
    assert grey.SegmentedPropertyTypeCodeSequence[0].CodeValue == "389081007"  # SNOMED CT gray matter
    assert grey.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"  # tissue
    rgb = hd.color.CIELabColor.from_dicom_value(grey.RecommendedDisplayCIELabValue).to_rgb()
    assert np.allclose(rgb, (205, 62, 78), atol=2)  # FreeSurfer's cortex colour


def test_aseg_names_get_their_structure_codes_and_unknown_names_a_generic_one() -> None:
    left_hippocampus = ASEG.names.index("Left-Hippocampus")
    assert segment_style("Left-Hippocampus", left_hippocampus, ASEG.num_classes).type_keyword == "Hippocampus"
    assert segment_style("Left-Hippocampus", left_hippocampus, ASEG.num_classes).rgb == (220, 216, 20)
    other = segment_style("lesion", 1, 2)
    assert other.type_keyword == "AnatomicalStructure" and all(0 <= c <= 255 for c in other.rgb)


def test_labels_off_the_source_grid_or_beyond_the_label_set_are_refused(tmp_path: Path) -> None:
    write_series(head_image(GEOMETRIES["ras-like"]), tmp_path / "series")
    source = load_series(find_series(tmp_path / "series")[0])
    labels = _labels_of(source.image)
    with pytest.raises(ValueError, match="source series' grid"):
        write_seg(LabelMap(labels.array[:-1], labels.affine), TISSUE, source, tmp_path / "a.dcm")
    with pytest.raises(ValueError, match="class indices"):
        write_seg(labels.with_array(labels.array + 3), TISSUE, source, tmp_path / "b.dcm")
    assert not list(tmp_path.glob("*.dcm"))


def test_a_seg_read_onto_another_grid_is_refused(tmp_path: Path) -> None:
    write_series(head_image(GEOMETRIES["ras-like"]), tmp_path / "series")
    source = load_series(find_series(tmp_path / "series")[0])
    path = write_seg(_labels_of(source.image), TISSUE, source, tmp_path / "seg.dcm")
    shifted = source.image.affine.copy()
    shifted[:3, 3] += 0.5
    with pytest.raises(VolumeError, match="off the grid"):
        read_seg(path, LabelMap(np.zeros(source.image.shape, np.uint8), shifted))
    with pytest.raises(VolumeError, match="expected SEG"):
        read_seg(source.series.files[0], source.image)
