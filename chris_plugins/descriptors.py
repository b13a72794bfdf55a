"""ChRIS plugin descriptors: regenerate them with `chris_plugin_info`, and check them against ChRIS's registration
rules (`chris_plugins.registration`).

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

from chris_plugins.registration import registration_problems

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
