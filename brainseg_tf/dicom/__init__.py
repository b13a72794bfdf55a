"""DICOM in and out: series found in a folder tree, read as `Image` volumes, label maps written back as DICOM SEG.

Needs the ``dicom`` extra (pydicom, highdicom); imported lazily where NIfTI-only runs never need it.
Series are named by a non-identifying key (``series 7 #1a2b3c4d``); patient and study attributes
are copied only into DICOM outputs.
"""

from brainseg_tf.dicom.contrast import CONTRAST_WARNING_CODE, contrast_warning, named_contrast
from brainseg_tf.dicom.geometry import LPS_TO_RAS
from brainseg_tf.dicom.reading import LoadedSeries, load_series
from brainseg_tf.dicom.seg import read_seg, write_seg
from brainseg_tf.dicom.series import DicomSeries, find_series, group_series, is_dicom_file

__all__ = [
    "CONTRAST_WARNING_CODE",
    "LPS_TO_RAS",
    "DicomSeries",
    "LoadedSeries",
    "contrast_warning",
    "find_series",
    "group_series",
    "is_dicom_file",
    "load_series",
    "named_contrast",
    "read_seg",
    "write_seg",
]
