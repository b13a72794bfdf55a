"""What a series' description says about its contrast: a warning reason when it names something other than T1.

The networks are trained on T1-weighted images. A SeriesDescription (or ProtocolName) naming another
contrast (T2, FLAIR, DWI, ...) does not stop the segmentation: it yields a short reason that the
QC verdict reports, unless the user overrides it. The reason names the contrast only, never the
description itself (free text a site may fill with anything).
"""

from __future__ import annotations

import re

CONTRAST_WARNING_CODE = "non_t1_contrast"
"""The machine-readable name of the warning, for QC verdicts that collect reasons by code."""

# (contrast named in the reason, pattern). Tokens are matched between non-alphanumeric boundaries,
# so "T2" matches "AX_T2_TSE" and "t2w" but not "MPRAGE2" or "ST2A".
_OTHER_CONTRASTS: tuple[tuple[str, str], ...] = (
    ("FLAIR", r"flair|tirm|dark[ _-]?fluid"),
    ("T2*", r"t2\*|t2star|t2_star|swi|swan"),
    ("T2", r"t2w?|t2[ _-]?\w+|haste"),
    ("DWI", r"dwi|dti|diff\w*|ep2d[ _-]?diff|trace|b\d{3,4}"),
    ("ADC", r"adc"),
    ("proton density", r"pdw?|pd[ _-]?tse|proton[ _-]?density"),
    ("perfusion", r"perf\w*|pwi|dsc|dce|asl|pcasl"),
    ("functional", r"bold|fmri|rest(ing)?[ _-]?state"),
    ("angiography", r"tof|angio\w*|mra"),
)
_T1 = r"t1w?|t1[ _-]?\w+|mprage|mp2rage|spgr|fspgr|bravo|tfe"
_BOUNDARY = r"(?<![a-z0-9]){}(?![a-z0-9])"


def _token(pattern: str) -> re.Pattern[str]:
    return re.compile(_BOUNDARY.format(f"(?:{pattern})"), re.IGNORECASE)


_T1_TOKEN = _token(_T1)
_OTHER_TOKENS = tuple((name, _token(pattern)) for name, pattern in _OTHER_CONTRASTS)


def named_contrast(*descriptions: str | None) -> str | None:
    """The non-T1 contrast the descriptions name (e.g. ``"FLAIR"``), or None when they name T1 or nothing known.

    A description naming T1 as well (e.g. ``"T1 FLAIR"``, a T1-weighted FLAIR) counts as T1.
    """
    text = " ".join(d for d in descriptions if d)
    if not text or _T1_TOKEN.search(text):
        return None
    return next((name for name, token in _OTHER_TOKENS if token.search(text)), None)


def contrast_warning(*descriptions: str | None) -> str | None:
    """A one-line reason for the QC verdict when the descriptions name a non-T1 contrast, else None."""
    contrast = named_contrast(*descriptions)
    if contrast is None:
        return None
    return f"the series description names {contrast} contrast; the networks expect T1-weighted images"
