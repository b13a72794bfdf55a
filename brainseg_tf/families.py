"""The two model families, named once: one softmax network over every class, or single-class sigmoid networks."""

from __future__ import annotations

from enum import Enum


class Family(str, Enum):
    """A network's family; its value is what ``bundle.json`` and the command lines say."""

    MULTICLASS = "multiclass"
    SINGLE_CLASS = "single_class"


FAMILIES: tuple[str, ...] = tuple(family.value for family in Family)
