"""The committed ChRIS descriptors: current with the code, and registrable under the backend's rules."""

from __future__ import annotations

import copy
import json

import pytest

from chris_plugins.descriptors import DEFAULT_REGISTRY, PLUGINS, generate, registration_problems, render


@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.name for p in PLUGINS])
def test_committed_descriptor_is_what_chris_plugin_info_prints_now(plugin) -> None:
    assert plugin.descriptor.read_text() == render(generate(plugin, DEFAULT_REGISTRY)), "run: .venv/bin/python -m chris_plugins.descriptors"


@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.name for p in PLUGINS])
def test_committed_descriptor_follows_the_registration_rules(plugin) -> None:
    descriptor = json.loads(plugin.descriptor.read_text())
    assert registration_problems(descriptor) == []
    assert descriptor["type"] == "ds" and descriptor["selfexec"] == f"brainseg_{plugin.name.rsplit('-', 1)[1]}"
    assert {p["name"] for p in descriptor["parameters"]} >= {"pattern", "format", "qc", "probabilities", "threads"}
    assert descriptor["min_gpu_limit"] == descriptor["max_gpu_limit"] == 0


def _variant(change) -> dict:
    descriptor = copy.deepcopy(json.loads(PLUGINS[0].descriptor.read_text()))
    change(descriptor)
    return descriptor


BROKEN = [
    ("version with letters", lambda d: d.update(version="0.1.0a1"), "version"),
    ("version too long", lambda d: d.update(version="1.2.3.4.5.6"), "version"),
    ("memory in GB", lambda d: d.update(min_memory_limit="2GB"), "min_memory_limit"),
    ("memory max in bytes", lambda d: d.update(max_memory_limit="2000000"), "max_memory_limit"),
    ("CPU in cores", lambda d: d.update(min_cpu_limit="2"), "min_cpu_limit"),
    ("no workers", lambda d: d.update(min_number_of_workers=0), "min_number_of_workers"),
    ("GPU max below min", lambda d: d.update(min_gpu_limit=2, max_gpu_limit=1), "GPU"),
    ("long title", lambda d: d.update(title="t" * 401), "title"),
    ("long category", lambda d: d.update(category="c" * 101), "category"),
    ("long description", lambda d: d.update(description="d" * 2001), "description"),
    ("long name", lambda d: d.update(name="n" * 101), "name"),
    ("optional without default", lambda d: d["parameters"][0].update(default=None), "without a default"),
    ("optional path", lambda d: d["parameters"][0].update(type="path"), "path parameters"),
    ("long parameter name", lambda d: d["parameters"][0].update(name="p" * 51), "name"),
    ("long flag", lambda d: d["parameters"][0].update(flag="--" + "f" * 51), "flag"),
    ("long string default", lambda d: d["parameters"][0].update(default="x" * 601), "600"),
]


@pytest.mark.parametrize(("change", "phrase"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_registration_rules_catch_what_the_backend_refuses(change, phrase: str) -> None:
    problems = registration_problems(_variant(change))
    assert len(problems) == 1 and phrase in problems[0], problems


def _parameter(**changes):
    return lambda d: d["parameters"][0].update(changes)


# Descriptor variants with ChRIS_ultron_backEnd's verdict: None where it registers them, else the field its
# refusal names. The first eleven were tried against a running backend; the rest, mostly at each limit,
# carry the verdict read from its source (plugins/admin.py, serializers.py, models.py, fields.py).
BACKEND_VERDICTS = [
    ("max memory below min", lambda d: d.update(min_memory_limit="2Gi", max_memory_limit="2047Mi"), "max_memory_limit"),
    ("authors of 201 characters", lambda d: d.update(authors="a" * 201), "authors"),
    ("license of 51 characters", lambda d: d.update(license="l" * 51), "license"),
    ("selfexec of 51 characters", lambda d: d.update(selfexec="s" * 51), "selfexec"),
    ("icon not a URL", lambda d: d.update(icon="brainseg.png"), "icon"),
    ("short_flag of 53 characters", _parameter(short_flag="-" + "s" * 52), "short_flag"),
    ("required parameter hidden from the UI", _parameter(optional=False, ui_exposed=False), "ui_exposed"),
    ("memory as an integer of MiB", lambda d: d.update(min_memory_limit=2000), None),
    ("CPU as an integer of millicores", lambda d: d.update(min_cpu_limit=1000), None),
    ("no max_number_of_workers", lambda d: d.pop("max_number_of_workers"), None),
    ("append action", _parameter(action="append"), None),
    ("max memory equal to min", lambda d: d.update(min_memory_limit="2Gi", max_memory_limit="2048Mi"), None),
    ("max CPU equal to min", lambda d: d.update(min_cpu_limit="2000m", max_cpu_limit=2000), None),
    ("max CPU below min", lambda d: d.update(min_cpu_limit="2000m", max_cpu_limit="1999m"), "max_cpu_limit"),
    ("max workers below min", lambda d: d.update(min_number_of_workers=2, max_number_of_workers=1), "max_number_of"),
    ("GPU as text", lambda d: d.update(max_gpu_limit="1"), None),
    ("no min memory or CPU", lambda d: [d.pop("min_memory_limit"), d.pop("min_cpu_limit")], None),
    ("memory at the integer column's limit", lambda d: d.update(min_memory_limit="2097151Gi", max_memory_limit="2097151Gi"), None),
    ("memory past the integer column's limit", lambda d: d.update(min_memory_limit="2097152Gi"), "min_memory_limit"),
    ("authors of 200 characters", lambda d: d.update(authors="a" * 200), None),
    ("license of 50 characters", lambda d: d.update(license="l" * 50), None),
    ("selfexec of 50 characters", lambda d: d.update(selfexec="s" * 50), None),
    ("execshell of 51 characters", lambda d: d.update(execshell="/" + "e" * 50), "execshell"),
    ("selfpath of 512 characters", lambda d: d.update(selfpath="/" + "p" * 511), None),
    ("selfpath of 513 characters", lambda d: d.update(selfpath="/" + "p" * 512), "selfpath"),
    ("documentation of 800 characters", lambda d: d.update(documentation="d" * 800), None),
    ("documentation of 801 characters", lambda d: d.update(documentation="d" * 801), "documentation"),
    ("icon URL", lambda d: d.update(icon="https://example.org/brainseg.png"), None),
    ("icon URL of 301 characters", lambda d: d.update(icon="https://example.org/" + "i" * 281), "icon"),
    ("no selfexec", lambda d: d.pop("selfexec"), "selfexec"),
    ("version of 10 characters", lambda d: d.update(version="1.2.3.4.56"), None),
    ("title of 400 characters", lambda d: d.update(title="t" * 400), None),
    ("description of 2000 characters", lambda d: d.update(description="d" * 2000), None),
    ("short_flag of 52 characters", _parameter(short_flag="-" + "s" * 51), None),
    ("parameter name of 50 characters", _parameter(name="p" * 50), None),
    ("flag of 52 characters", _parameter(flag="--" + "f" * 50), None),
    ("action of 21 characters", _parameter(action="a" * 21), "action"),
    ("string default of 600 characters", _parameter(default="x" * 600), None),
    ("required parameter shown in the UI", _parameter(optional=False, ui_exposed=True), None),
    ("optional parameter hidden from the UI", _parameter(ui_exposed=False), None),
    ("required path parameter with a default", _parameter(type="path", optional=False, default="in"), "default"),
]


@pytest.mark.parametrize(("change", "field"), [v[1:] for v in BACKEND_VERDICTS], ids=[v[0] for v in BACKEND_VERDICTS])
def test_registration_rules_give_the_backends_verdict(change, field: str | None) -> None:
    problems = registration_problems(_variant(change))
    if field is None:
        assert problems == []
    else:
        assert len(problems) == 1 and field in problems[0], problems
