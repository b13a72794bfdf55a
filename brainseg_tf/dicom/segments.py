"""What a DICOM SEG says about each class of a label set: SNOMED CT codes and a display colour.

Names are matched case-insensitively, a ``Left-``/``Right-`` prefix set aside (it stays in the
segment label). Colours are FreeSurferColorLUT's for the structures it names (the neuroimaging
standard), else the QC picture's palette (`brainseg_tf.visualize.label_colormap`). A class with no
known code is an "Anatomical Structure" of that name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Segment property: (SNOMED CT keyword in pydicom's code dictionary, category keyword).
_TYPES: dict[str, tuple[str, str]] = {
    "csf": ("CerebrospinalFluid", "BodySubstance"),
    "cerebrospinal fluid": ("CerebrospinalFluid", "BodySubstance"),
    "gray matter": ("GrayMatter", "Tissue"),
    "grey matter": ("GrayMatter", "Tissue"),
    "white matter": ("WhiteMatter", "Tissue"),
    "brain": ("Brain", "AnatomicalStructure"),
    "cerebral-white-matter": ("CerebralWhiteMatter", "AnatomicalStructure"),
    "cerebral-cortex": ("CerebralCortex", "AnatomicalStructure"),
    "lateral-ventricle": ("LateralVentricle", "AnatomicalStructure"),
    "inf-lat-vent": ("InferiorHornOfLateralVentricle", "AnatomicalStructure"),
    "cerebellum-white-matter": ("CerebellarWhiteMatter", "AnatomicalStructure"),
    "cerebellum-cortex": ("CerebellarCortex", "AnatomicalStructure"),
    "thalamus": ("Thalamus", "AnatomicalStructure"),
    "caudate": ("CaudateNucleus", "AnatomicalStructure"),
    "putamen": ("Putamen", "AnatomicalStructure"),
    "pallidum": ("GlobusPallidus", "AnatomicalStructure"),
    "3rd-ventricle": ("ThirdVentricle", "AnatomicalStructure"),
    "4th-ventricle": ("FourthVentricle", "AnatomicalStructure"),
    "brain-stem": ("BrainStem", "AnatomicalStructure"),
    "hippocampus": ("Hippocampus", "AnatomicalStructure"),
    "amygdala": ("Amygdala", "AnatomicalStructure"),
    "accumbens-area": ("NucleusAccumbens", "AnatomicalStructure"),
    "ventraldc": ("Diencephalon", "AnatomicalStructure"),
}

# FreeSurferColorLUT colours (RGB 0-255) of the same names.
_FREESURFER_RGB: dict[str, tuple[int, int, int]] = {
    "csf": (60, 60, 60),
    "cerebrospinal fluid": (60, 60, 60),
    "gray matter": (205, 62, 78),
    "grey matter": (205, 62, 78),
    "white matter": (245, 245, 245),
    "cerebral-white-matter": (245, 245, 245),
    "cerebral-cortex": (205, 62, 78),
    "lateral-ventricle": (120, 18, 134),
    "inf-lat-vent": (196, 58, 250),
    "cerebellum-white-matter": (220, 248, 164),
    "cerebellum-cortex": (230, 148, 34),
    "thalamus": (0, 118, 14),
    "caudate": (122, 186, 220),
    "putamen": (236, 13, 176),
    "pallidum": (12, 48, 255),
    "3rd-ventricle": (204, 182, 142),
    "4th-ventricle": (42, 204, 164),
    "brain-stem": (119, 159, 176),
    "hippocampus": (220, 216, 20),
    "amygdala": (103, 255, 255),
    "accumbens-area": (255, 165, 0),
    "ventraldc": (165, 42, 42),
}


@dataclass(frozen=True)
class SegmentStyle:
    """How one class is described in a DICOM SEG.

    Attributes:
        type_keyword: pydicom SNOMED CT keyword of the segmented property type (e.g. ``GrayMatter``).
        category_keyword: pydicom SNOMED CT keyword of its category (e.g. ``Tissue``).
        rgb: display colour, 0-255 per channel.
    """

    type_keyword: str
    category_keyword: str
    rgb: tuple[int, int, int]


def _base_name(name: str) -> str:
    lowered = name.strip().lower()
    for side in ("left-", "right-"):
        if lowered.startswith(side):
            return lowered[len(side):]
    return lowered


def segment_style(name: str, class_index: int, num_classes: int) -> SegmentStyle:
    """The codes and colour of class ``class_index`` (named ``name``) in a label set of ``num_classes``."""
    base = _base_name(name)
    type_keyword, category_keyword = _TYPES.get(base, ("AnatomicalStructure", "AnatomicalStructure"))
    rgb = _FREESURFER_RGB.get(base)
    if rgb is None:
        from brainseg_tf.visualize import label_colormap

        rgb = tuple(int(round(255 * c)) for c in label_colormap(num_classes)(class_index)[:3])  # type: ignore[assignment]
    return SegmentStyle(type_keyword, category_keyword, rgb)  # type: ignore[arg-type]
