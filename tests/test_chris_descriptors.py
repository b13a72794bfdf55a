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


def _broken(change) -> dict:
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
    ("GPU as text", lambda d: d.update(max_gpu_limit="1"), "GPU"),
    ("long title", lambda d: d.update(title="t" * 401), "title"),
    ("long category", lambda d: d.update(category="c" * 101), "category"),
    ("long description", lambda d: d.update(description="d" * 2001), "description"),
    ("long name", lambda d: d.update(name="n" * 101), "name"),
    ("optional without default", lambda d: d["parameters"][0].update(default=None), "without a default"),
    ("optional path", lambda d: d["parameters"][0].update(type="path"), "path parameters"),
    ("append action", lambda d: d["parameters"][0].update(action="append"), "action"),
    ("long parameter name", lambda d: d["parameters"][0].update(name="p" * 51), "name"),
    ("long flag", lambda d: d["parameters"][0].update(flag="--" + "f" * 51), "flag"),
    ("long string default", lambda d: d["parameters"][0].update(default="x" * 601), "600"),
]


@pytest.mark.parametrize(("change", "phrase"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_registration_rules_catch_what_the_backend_refuses(change, phrase: str) -> None:
    problems = registration_problems(_broken(change))
    assert len(problems) == 1 and phrase in problems[0], problems
