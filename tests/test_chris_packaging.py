"""Each plugin's packaging after the ChRIS template: setup.py's classifiers and extras, the image's labels and build argument.

setup.py is read with `ast` (nothing installed or run); the Dockerfile with the stage parser of
`test_dockerfiles`.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_dockerfiles import PLUGIN_DOCKERFILE, stage

from chris_plugins.descriptors import PLUGINS, Plugin

REPO = Path(__file__).resolve().parents[1]
OCI = "org.opencontainers.image."
TEMPLATE_LABELS = {"authors", "source", "licenses", "version", "title", "description"}
IDS = [p.name for p in PLUGINS]


def setup_keywords(plugin: Plugin) -> dict[str, Any]:
    """The literal keyword arguments of the ``setup(...)`` call in the plugin's setup.py (others as None)."""
    tree = ast.parse((plugin.folder / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup")
    keywords = {}
    for keyword in call.keywords:
        try:
            keywords[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:  # e.g. version=VERSION
            keywords[keyword.arg] = None
    return keywords


def _constraint_names() -> set[str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return {_normalize(line.partition("==")[0]) for line in lines if "==" in line}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _labels(plugin: Plugin) -> dict[str, str]:
    return {**stage(PLUGIN_DOCKERFILE, "plugin-base").pairs("LABEL"), **stage(PLUGIN_DOCKERFILE, plugin.name).pairs("LABEL")}


@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_setup_has_the_templates_classifiers_and_extras(plugin: Plugin) -> None:
    keywords = setup_keywords(plugin)
    classifiers = keywords["classifiers"]
    assert all(re.fullmatch(r"[A-Z][\w ./-]*( :: [\w ./()-]+)+", c) for c in classifiers), classifiers
    assert "License :: OSI Approved :: MIT License" in classifiers and keywords["license"] == "MIT"
    assert "Topic :: Scientific/Engineering :: Medical Science Apps." in classifiers
    extras = keywords["extras_require"]
    assert extras["none"] == []  # the Dockerfile's default build argument
    dev = {_normalize(re.split(r"[<>=!~;\[ ]", r)[0]) for r in extras["dev"]}
    assert "pytest" in dev and dev <= _constraint_names(), dev - _constraint_names()


@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_the_image_carries_the_templates_oci_labels_from_setup(plugin: Plugin) -> None:
    keywords, labels = setup_keywords(plugin), _labels(plugin)
    assert {k.removeprefix(OCI) for k in labels if k.startswith(OCI)} >= TEMPLATE_LABELS
    assert labels[OCI + "authors"] == f"{keywords['author']} <{keywords['author_email']}>"
    assert labels[OCI + "licenses"] == keywords["license"]
    assert labels[OCI + "title"] == plugin.name and labels[OCI + "version"] == "${VERSION}"
    assert labels[OCI + "source"] == keywords["url"].split("/tree/")[0]


@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_the_image_takes_the_templates_extras_require_build_argument(plugin: Plugin) -> None:
    final = stage(PLUGIN_DOCKERFILE, plugin.name)
    assert "extras_require=none" in final.values("ARG")
    runs = " ".join(final.values("RUN"))
    assert '-c /tmp/plugin-src/constraints.txt "/tmp/plugin-src[${extras_require}]"' in runs
    assert 'if [ "${extras_require}" != none ]' in runs  # the default build installs nothing more


@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_the_readme_lists_the_allowed_values_the_chris_ui_cannot_show(plugin: Plugin) -> None:
    """ChRIS knows nothing of argparse ``choices``: the README's "Allowed values" table lists them per flag."""
    readme = (plugin.folder / "README.md").read_text()
    assert "### Allowed values" in readme, f"{plugin.name}/README.md: no '### Allowed values' section"
    section = readme.split("### Allowed values", 1)[1].split("\n#", 1)[0]
    choices = parser_choices(plugin)
    assert choices, "no parameter with choices: drop the section or this test"
    for flag, values in choices.items():
        row = next((line for line in section.splitlines() if line.startswith(f"| `{flag}` |")), None)
        assert row, f"{plugin.name}/README.md: no row for {flag} under Allowed values"
        assert all(f"`{value}`" in row for value in values), (row, values)


def parser_choices(plugin: Plugin) -> dict[str, list[str]]:
    """``{flag: choices}`` of the plugin module's parser, read in a child process (chris_plugin allows one plugin per process)."""
    code = (f"import json, {plugin.module} as m; "
            "print(json.dumps({a.option_strings[-1]: [str(c) for c in a.choices] for a in m.parser._actions if a.choices}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("plugin", PLUGINS, ids=IDS)
def test_the_descriptor_bounds_memory_and_cpu_and_the_readme_gives_the_range(plugin: Plugin) -> None:
    descriptor = json.loads(plugin.descriptor.read_text())
    readme = (plugin.folder / "README.md").read_text()
    for key in ("min_memory_limit", "max_memory_limit", "min_cpu_limit", "max_cpu_limit"):
        assert re.fullmatch(r"[1-9][0-9]*(Mi|Gi|m)", str(descriptor[key])), f"{key}: {descriptor[key]!r}"
        assert f"`{descriptor[key]}`" in readme, f"{plugin.name}/README.md does not give {key} {descriptor[key]}"
