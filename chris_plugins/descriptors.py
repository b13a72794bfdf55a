"""ChRIS plugin descriptors: regenerate them with `chris_plugin_info`, and check them against ChRIS's registration rules.

Run ``python -m chris_plugins.descriptors`` to rewrite ``chris_plugins/<plugin>/<plugin>.json``, or with
``--check`` to fail when a committed descriptor drifted from the code. The descriptor records where
the console script lives in the image (``selfpath``, ``execshell``): both images install the project
into the virtual environment `IMAGE_VENV`, so those two fields are set to it whatever machine
regenerates the file (inside a built image they come out the same by themselves).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLUGINS_DIR = Path(__file__).resolve().parent
PUBLIC_REPO = "https://github.com/brainseg-tf/brainseg-tf"
DEFAULT_REGISTRY = "ghcr.io/brainseg-tf"
"""The registry the committed descriptors name; `BRAINSEG_REGISTRY` overrides it for a build elsewhere."""
REGISTRY = os.environ.get("BRAINSEG_REGISTRY", DEFAULT_REGISTRY)
IMAGE_VENV = "/opt/brainseg/venv"
"""Where both plugin images (x86_64 and ppc64le) hold the Python that runs the plugin."""


@dataclass(frozen=True)
class Plugin:
    """One plugin: its distribution (= folder and image name), module and console script."""

    name: str
    module: str

    @property
    def folder(self) -> Path:
        return PLUGINS_DIR / self.name

    @property
    def descriptor(self) -> Path:
        return self.folder / f"{self.name}.json"

    def version(self) -> str:
        found = re.search(r'^__version__ = "([^"]+)"', (self.folder / f"{self.module}.py").read_text(), re.MULTILINE)
        if not found:
            raise ValueError(f"{self.folder / f'{self.module}.py'}: no __version__ line")
        return found.group(1)

    def image(self, registry: str = REGISTRY) -> str:
        return f"{registry}/{self.name}:{self.version()}"


PLUGINS = (Plugin("pl-brainseg-multiclass", "brainseg_multiclass"), Plugin("pl-brainseg-ensemble", "brainseg_ensemble"))

# --- the ChRIS backend's registration rules -------------------------------------------------------

FIELD_LIMITS = {"name": 100, "title": 400, "category": 100, "description": 2000}
PARAMETER_LIMITS = {"name": 50, "flag": 52}
STRING_DEFAULT_LIMIT = 600
ACTIONS = ("store", "store_true", "store_false")
PARAMETER_TYPES = ("str", "int", "float", "bool", "path", "unextpath")


def registration_problems(descriptor: dict[str, Any]) -> list[str]:
    """Everything the ChRIS backend would refuse in a descriptor; empty when it would register."""
    problems = []
    version = str(descriptor.get("version", ""))
    if not re.fullmatch(r"[0-9.]+", version) or len(version) > 10:
        problems.append(f"version {version!r}: expected digits and dots, at most 10 characters")
    for key, limit in FIELD_LIMITS.items():
        if not isinstance(descriptor.get(key), str) or len(descriptor[key]) > limit:
            problems.append(f"{key}: expected a string of at most {limit} characters")
    if descriptor.get("type") not in ("ds", "fs", "ts"):
        problems.append(f"type {descriptor.get('type')!r}: expected ds, fs or ts")
    problems += _resource_problems(descriptor)
    for parameter in descriptor.get("parameters", []):
        problems += [f"parameter {parameter.get('name')!r}: {p}" for p in _parameter_problems(parameter)]
    return problems


def _resource_problems(descriptor: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("min_memory_limit", "max_memory_limit"):
        value = descriptor.get(key, "")
        if (key.startswith("min") or value) and not re.fullmatch(r"[0-9]+(Mi|Gi)", str(value)):
            problems.append(f"{key} {value!r}: expected <int>Mi or <int>Gi")
    for key in ("min_cpu_limit", "max_cpu_limit"):
        value = descriptor.get(key, "")
        if (key.startswith("min") or value) and not re.fullmatch(r"[0-9]+m", str(value)):
            problems.append(f"{key} {value!r}: expected <int>m (millicores)")
    for key in ("min_number_of_workers", "max_number_of_workers"):
        if not _is_int(descriptor.get(key)) or descriptor[key] < 1:
            problems.append(f"{key} {descriptor.get(key)!r}: expected an integer of at least 1")
    low, high = descriptor.get("min_gpu_limit"), descriptor.get("max_gpu_limit")
    if not (_is_int(low) and _is_int(high) and 0 <= low <= high):
        problems.append(f"GPU limits {low!r}..{high!r}: expected integers with 0 <= min <= max")
    return problems


def _parameter_problems(parameter: dict[str, Any]) -> list[str]:
    problems = []
    for key, limit in PARAMETER_LIMITS.items():
        if not isinstance(parameter.get(key), str) or not 0 < len(parameter[key]) <= limit:
            problems.append(f"{key}: expected 1 to {limit} characters")
    if parameter.get("action") not in ACTIONS:
        problems.append(f"action {parameter.get('action')!r}: expected one of {ACTIONS}")
    if parameter.get("type") not in PARAMETER_TYPES:
        problems.append(f"type {parameter.get('type')!r}: expected one of {PARAMETER_TYPES}")
    if parameter.get("optional"):
        if parameter.get("default") is None:
            problems.append("optional without a default")
        if parameter.get("type") in ("path", "unextpath"):
            problems.append("optional path parameters are not allowed")
    default = parameter.get("default")
    if isinstance(default, str) and len(default) > STRING_DEFAULT_LIMIT:
        problems.append(f"string default longer than {STRING_DEFAULT_LIMIT} characters")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- regeneration ---------------------------------------------------------------------------------


def generate(plugin: Plugin, registry: str = REGISTRY) -> dict[str, Any]:
    """The descriptor `chris_plugin_info` prints for an installed plugin, as the images will report it.

    ``selfpath``/``execshell`` are set to `IMAGE_VENV`, where both images hold the plugin's Python
    (inside a built image, `docker/build.py` runs ``chris_plugin_info`` there instead).

    Args:
        plugin: which one.
        registry: image registry and owner, e.g. ``ghcr.io/brainseg-tf``.

    Raises:
        RuntimeError: chris_plugin_info failed (its stderr in the message).
    """
    bin_dir = Path(sys.executable).parent
    tool = shutil.which("chris_plugin_info", path=str(bin_dir)) or "chris_plugin_info"
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [tool, "--dock-image", plugin.image(registry), "--public-repo", PUBLIC_REPO, plugin.name]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    descriptor = json.loads(done.stdout)
    descriptor["selfpath"] = f"{IMAGE_VENV}/bin"
    descriptor["execshell"] = f"{IMAGE_VENV}/bin/python"
    return descriptor


def render(descriptor: dict[str, Any]) -> str:
    """The committed text of a descriptor: 2-space JSON, keys in chris_plugin_info's order, final newline."""
    return json.dumps(descriptor, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or with --check, compare) every plugin's descriptor; 1 on drift or a broken rule."""
    parser = argparse.ArgumentParser(prog="python -m chris_plugins.descriptors", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing them")
    parser.add_argument("--registry", default=REGISTRY, help="image registry/owner (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="write the descriptors here instead of next to each plugin")
    args = parser.parse_args(argv)
    status = 0
    for plugin in PLUGINS:
        descriptor = generate(plugin, args.registry)
        problems = registration_problems(descriptor)
        for problem in problems:
            print(f"{plugin.name}: {problem}", file=sys.stderr)
        target = (args.output_dir / plugin.descriptor.name) if args.output_dir else plugin.descriptor
        if args.check:
            if not target.is_file() or target.read_text() != render(descriptor):
                print(f"{target}: out of date; run python -m chris_plugins.descriptors", file=sys.stderr)
                status = 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(descriptor))
            print(f"wrote {target}")
        status = status or int(bool(problems))
    return status


if __name__ == "__main__":
    sys.exit(main())
