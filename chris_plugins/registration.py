"""The ChRIS backend's registration rules, checked locally before a descriptor is uploaded.

Agrees with ChRIS_ultron_backEnd's descriptor upload (what docker/register.py posts as `fname`):
plugins/admin.py PluginAdminSerializer.validate (required descriptors, version, resources,
parameters), then its create(): PluginMetaSerializer, PluginSerializer and PluginParameterSerializer
(plugins/serializers.py) validate every field as DRF builds it from plugins/models.py, and
DEFAULT_PARAMETER_SERIALIZERS validates each parameter's default. The backend stops at its first
error; this check lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

INT_MAX = 2147483647
"""Largest value of an integer column: plugins/models.py Plugin.defaults['max_limit'] ("maxint")."""


@dataclass(frozen=True)
class TextRule:
    """A text field as DRF's CharField (or URLField) checks it: numbers become text, trimmed; null refused."""

    limit: int
    blank: bool = True  # the model field's blank=True
    required: bool = False
    url: bool = False  # a models.URLField: Django's URLValidator (http, https, ftp, ftps)

    def problem(self, key: str, record: dict[str, Any]) -> str | None:
        if key not in record:
            return f"{key}: required" if self.required else None
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return f"{key} {value!r}: expected a string"
        text = str(value).strip()
        if not text:
            return None if self.blank else f"{key}: expected a non-empty string"
        if len(text) > self.limit:
            return f"{key}: expected at most {self.limit} characters. Received: {len(text)}"
        if self.url and not _URL.fullmatch(text):
            return f"{key} {text!r}: expected an http(s) or ftp(s) URL"
        return None


_URL = re.compile(
    r"(?:https?|ftps?)://(?:[^\s:@/]+(?::[^\s@/]*)?@)?"
    r"(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\]"
    r"|(?:[a-z0-9\u00a1-\uffff](?:[a-z0-9\u00a1-\uffff-]{0,61}[a-z0-9\u00a1-\uffff])?\.)+"
    r"(?:[a-z\u00a1-\uffff-]{2,63}|xn--[a-z0-9]{1,59})\.?)(?::\d{1,5})?(?:[/?#]\S*)?",
    re.IGNORECASE,
)
"""Close to Django's URLValidator, which DRF's URLField runs (scheme, host with a TLD, IP or localhost, port, path)."""

DESCRIPTOR_TEXT = {
    # plugins/admin.py PluginAdminSerializer.validate: check_required_descriptor(name, version,
    # dock_image, execshell, selfpath, selfexec, parameters); the rest default to '' in create().
    "name": TextRule(100, blank=False, required=True),  # plugins/models.py PluginMeta.name max_length=100
    "title": TextRule(400),  # plugins/models.py PluginMeta.title max_length=400, blank=True
    "license": TextRule(50),  # plugins/models.py PluginMeta.license max_length=50, blank=True
    "category": TextRule(100),  # plugins/models.py PluginMeta.category max_length=100, blank=True
    "authors": TextRule(200),  # plugins/models.py PluginMeta.authors max_length=200, blank=True
    "documentation": TextRule(800),  # plugins/models.py PluginMeta.documentation: a CharField max_length=800
    "public_repo": TextRule(300, url=True),  # plugins/models.py PluginMeta.public_repo URLField max_length=300
    "icon": TextRule(300, url=True),  # plugins/models.py PluginMeta.icon URLField max_length=300, blank=True
    "version": TextRule(10, blank=False, required=True),  # plugins/models.py Plugin.version max_length=10
    "dock_image": TextRule(500, blank=False, required=True),  # plugins/models.py Plugin.dock_image max_length=500
    "execshell": TextRule(50, blank=False, required=True),  # plugins/models.py Plugin.execshell max_length=50
    "selfpath": TextRule(512, blank=False, required=True),  # plugins/models.py Plugin.selfpath max_length=512
    "selfexec": TextRule(50, blank=False, required=True),  # plugins/models.py Plugin.selfexec max_length=50
    # plugins/models.py Plugin.description blank=True; max_length=2000 since migrations/0042_auto_20201130_1317.py
    "description": TextRule(2000),
}
# plugins/models.py PluginMeta.type choices PLUGIN_TYPE_CHOICES ('ts' since migrations/0044_auto_20210126_1615.py)
PLUGIN_TYPES = ("ds", "fs", "ts")
PARAMETER_TEXT = {
    "name": TextRule(50, blank=False, required=True),  # plugins/models.py PluginParameter.name max_length=50
    "flag": TextRule(52, blank=False, required=True),  # plugins/models.py PluginParameter.flag max_length=52
    "short_flag": TextRule(52),  # plugins/models.py PluginParameter.short_flag max_length=52, blank=True
    # plugins/models.py PluginParameter.action max_length=20, default 'store': any argparse action fits
    "action": TextRule(20, blank=False),
}
# plugins/models.py TYPES (back-end names); PluginAdminSerializer.validate_app_parameters refuses others
PARAMETER_TYPES = ("str", "int", "float", "bool", "path", "unextpath")
PATH_TYPES = ("path", "unextpath")
STRING_DEFAULT = TextRule(600)  # plugins/models.py DefaultStrParameter.value max_length=600, blank=True


def registration_problems(descriptor: dict[str, Any]) -> list[str]:
    """Everything the ChRIS backend would refuse in a descriptor; empty when it would register."""
    problems = [p for key, rule in DESCRIPTOR_TEXT.items() if (p := rule.problem(key, descriptor))]
    version = descriptor.get("version")
    # plugins/admin.py PluginAdminSerializer.validate_app_version: a string matching ^[0-9.]+$
    if "version" in descriptor and not (isinstance(version, str) and re.fullmatch(r"[0-9.]+", version)):
        problems.append(f"version {version!r}: expected a string of digits and dots")
    if descriptor.get("type") not in PLUGIN_TYPES:  # create() passes '' when absent: not a choice
        problems.append(f"type {descriptor.get('type')!r}: expected ds, fs or ts")
    problems += _resource_problems(descriptor)
    parameters = descriptor.get("parameters")  # required: PluginAdminSerializer.validate check_required_descriptor
    if not isinstance(parameters, list):
        return problems + [f"parameters: expected a list. Received: {type(parameters).__name__}"]
    for parameter in parameters:
        name = parameter.get("name") if isinstance(parameter, dict) else parameter
        problems += [f"parameter {name!r}: {p}" for p in _parameter_problems(parameter)]
    return problems


def _backend_int(value: Any) -> int | None:
    """What Python's int() makes of a value (the backend calls it), or None where it raises."""
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _workers(value: Any) -> int | None:
    # plugins/admin.py PluginAdminSerializer.validate_app_workers_descriptor: int(value) >= 1
    number = _backend_int(value)
    return number if number is not None and number >= 1 else None


def _gpus(value: Any) -> int | None:
    # plugins/admin.py PluginAdminSerializer.validate_app_gpu_descriptor: int(value) >= 0
    number = _backend_int(value)
    return number if number is not None and number >= 0 else None


def _millicores(value: Any) -> int | None:
    # plugins/fields.py CPUInt: an int is taken as millicores as it is; text must be "<int>m", above 0
    if isinstance(value, int):
        return value
    number = _backend_int(value[:-1]) if isinstance(value, str) and value.endswith("m") else None
    return number if number is not None and number > 0 else None


def _mebibytes(value: Any) -> int | None:
    # plugins/fields.py MemoryInt: an int is taken as MiB as it is; text must be "<int>Mi" or "<int>Gi", above 0
    if isinstance(value, int):
        return value
    unit = {"Mi": 1, "Gi": 1024}.get(value[-2:]) if isinstance(value, str) else None
    number = _backend_int(value[:-2]) if unit else None
    return number * unit if number is not None and number * unit > 0 else None


RESOURCES = (
    # (label, descriptor suffix of min_<suffix> and max_<suffix>, parser, what it expects)
    ("workers", "number_of_workers", _workers, "an integer of at least 1"),
    ("CPU", "cpu_limit", _millicores, "<int>m (millicores) or an integer of millicores"),
    ("memory", "memory_limit", _mebibytes, "<int>Mi, <int>Gi or an integer of MiB"),
    ("GPU", "gpu_limit", _gpus, "an integer of at least 0"),
)


def _resource_problems(descriptor: dict[str, Any]) -> list[str]:
    problems = []
    for label, suffix, parse, expected in RESOURCES:
        parsed = {}
        for key in (f"min_{suffix}", f"max_{suffix}"):
            # plugins/admin.py PluginAdminSerializer.validate deletes '' (absent or '' takes the
            # plugins/models.py Plugin default), parses the rest and stores it in an integer column
            # (IntegerField, plugins/fields.py CPUField/MemoryField.get_internal_type) up to INT_MAX
            if descriptor.get(key, "") == "":
                continue
            value = parse(descriptor[key])
            if value is None or not -INT_MAX - 1 <= value <= INT_MAX:
                problems.append(f"{key} {descriptor[key]!r}: expected {expected}, at most {INT_MAX}")
            else:
                parsed[key] = value
        low, high = f"min_{suffix}", f"max_{suffix}"
        # plugins/admin.py PluginAdminSerializer.validate_app_descriptor_limits: max below min is refused
        if low in parsed and high in parsed and parsed[high] < parsed[low]:
            problems.append(f"{label} limits: {high} {descriptor[high]!r} is below {low} {descriptor[low]!r}")
    return problems


def _parameter_problems(parameter: Any) -> list[str]:
    if not isinstance(parameter, dict):
        return ["expected an object"]
    problems = [p for key, rule in PARAMETER_TEXT.items() if (p := rule.problem(key, parameter))]
    kind, default = parameter.get("type"), parameter.get("default")
    if kind not in PARAMETER_TYPES:
        return problems + [f"type {kind!r}: expected one of {PARAMETER_TYPES}"]
    # plugins/admin.py PluginAdminSerializer.validate_app_parameters
    if parameter.get("optional"):
        if kind in PATH_TYPES:
            return problems + ["optional path parameters are not allowed"]
        if default is None:
            problems.append("optional without a default")
    elif "ui_exposed" in parameter and not parameter["ui_exposed"]:
        problems.append("ui_exposed false: a required parameter must be exposed to the UI")
    if default is not None:
        problem = _default_problem(kind, default)
        problems += [problem] if problem else []
    return problems


_BOOLEAN_WORDS = ("t", "f", "y", "n", "yes", "no", "true", "false", "on", "off")
_DRF_BOOLEANS = {True, False, "1", "0"} | {
    form for word in _BOOLEAN_WORDS for form in (word, word.title(), word.upper())
}
"""What DRF's BooleanField takes as true or false (1 and 0 compare equal to True and False)."""


def _default_problem(kind: str, default: Any) -> str | None:
    """A default as plugins/serializers.py DEFAULT_PARAMETER_SERIALIZERS checks it (None when it passes)."""
    if kind in PATH_TYPES:  # DEFAULT_PARAMETER_SERIALIZERS has no path serializer: the backend fails
        return f"default {default!r}: path parameters cannot have a default"
    if kind == "str":
        return STRING_DEFAULT.problem("default", {"default": default})
    if kind == "int":  # DefaultIntParameter.value IntegerField: DRF takes 3, "3" and 3.0, not True or 3.5
        number = None if isinstance(default, bool) else _backend_int(re.sub(r"\.0*\s*$", "", str(default)))
        if number is None or not -INT_MAX - 1 <= number <= INT_MAX:
            return f"default {default!r}: expected an integer"
        return None
    if kind == "float":  # DefaultFloatParameter.value FloatField: DRF runs float()
        try:
            float(default)
        except (ValueError, TypeError):
            return f"default {default!r}: expected a number"
        return None
    if isinstance(default, (bool, int, float, str)) and default in _DRF_BOOLEANS:
        return None
    return f"default {default!r}: expected true or false"
