"""Build and push the multi-arch ChRIS plugin images, then regenerate each descriptor inside its image.

For each plugin (``pl-brainseg-multiclass``, ``pl-brainseg-ensemble``), from the repository root::

    docker buildx build --platform linux/amd64,linux/ppc64le -f docker/plugins/Dockerfile \\
        --target <plugin> --build-arg VERSION=<version> --build-arg REVISION=<git commit> \\
        -t <registry>/<plugin>:<version> --push .
    docker run --rm --platform linux/amd64 --network none <image> \\
        /opt/brainseg/venv/bin/chris_plugin_info --dock-image <image> --public-repo <repo> <plugin>

and the second command's output, checked against ChRIS's registration rules, replaces
``chris_plugins/<plugin>/<plugin>.json``. The version is the plugin's ``__version__``; the registry
defaults to ``$BRAINSEG_REGISTRY`` or ``ghcr.io/brainseg-tf`` (as ``chris_plugins.descriptors``).
``--dry-run`` prints the commands without running anything (no Docker needed). Without Docker, buildx
or a builder that can build every requested platform, it stops before building, saying what is missing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `python docker/build.py`

from chris_plugins.descriptors import (  # noqa: E402
    IMAGE_VENV,
    PLUGINS,
    PUBLIC_REPO,
    REGISTRY,
    Plugin,
    registration_problems,
    render,
)

DOCKERFILE = "docker/plugins/Dockerfile"
PLATFORMS = ("linux/amd64", "linux/ppc64le")
BINFMT_HINT = "docker run --privileged --rm tonistiigi/binfmt --install ppc64le"


class BuildError(Exception):
    """A build cannot start or a step failed; the message is one line for the user."""


def build_commands(plugin: Plugin, registry: str, platforms: list[str], revision: str, push: bool) -> list[list[str]]:
    """The buildx command(s) that build (and with ``push`` publish) one plugin's multi-arch image.

    Without ``push`` the multi-arch result stays in the build cache, and the first platform is
    built again (from cache) and loaded into the local engine, where its descriptor is read.
    """
    common = ["-f", DOCKERFILE, "--target", plugin.name, "--build-arg", f"VERSION={plugin.version()}",
              "--build-arg", f"REVISION={revision}", "-t", plugin.image(registry)]
    if push:
        return [["docker", "buildx", "build", "--platform", ",".join(platforms), *common, "--push", "."]]
    load = ["docker", "buildx", "build", "--platform", platforms[0], *common, "--load", "."]
    if len(platforms) == 1:
        return [load]
    return [["docker", "buildx", "build", "--platform", ",".join(platforms), *common, "."], load]


def descriptor_command(plugin: Plugin, registry: str, platform: str) -> list[str]:
    """``chris_plugin_info`` run inside the built image, offline, printing the plugin's descriptor."""
    image = plugin.image(registry)
    return ["docker", "run", "--rm", "--platform", platform, "--network", "none", image,
            f"{IMAGE_VENV}/bin/chris_plugin_info", "--dock-image", image, "--public-repo", PUBLIC_REPO, plugin.name]


def check_builder(platforms: list[str]) -> None:
    """Raise BuildError unless docker, buildx and a builder for every platform are here."""
    if shutil.which("docker") is None:
        raise BuildError("docker not found on PATH: install Docker (engine or Desktop) with the buildx plugin")
    version = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        raise BuildError("docker buildx is not available (`docker buildx version` failed): install the buildx plugin")
    inspect = subprocess.run(["docker", "buildx", "inspect", "--bootstrap"], capture_output=True, text=True, check=False)
    if inspect.returncode != 0:
        detail = " ".join((inspect.stderr or inspect.stdout).split())
        raise BuildError(f"no usable buildx builder (`docker buildx inspect --bootstrap` failed: {detail})")
    available = builder_platforms(inspect.stdout)
    missing = [p for p in platforms if p not in available]
    if missing:
        raise BuildError(
            f"the current buildx builder cannot build {', '.join(missing)} (it has: {', '.join(sorted(available)) or 'none'}); "
            f"add QEMU emulation ({BINFMT_HINT}) or a native node, then `docker buildx create --use`"
        )


def builder_platforms(inspect_output: str) -> set[str]:
    """The platforms listed on the ``Platforms:`` lines of ``docker buildx inspect``."""
    found: set[str] = set()
    for line in inspect_output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Platforms":
            found.update(p.strip().rstrip("*") for p in value.split(",") if p.strip())
    return found


def git_revision() -> str:
    """The checked-out commit, or ``unknown`` outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:  # no git here
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def run(command: list[str], capture: bool = False) -> str:
    """Run one command from the repository root; BuildError (one line) when it fails."""
    print("+ " + shlex.join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"`{shlex.join(command[:3])} ...` failed with exit status {done.returncode}")
    return done.stdout if capture else ""


def write_descriptor(plugin: Plugin, output: str, target: Path) -> None:
    """Check the descriptor printed inside the image and write it; BuildError if ChRIS would refuse it."""
    try:
        descriptor = json.loads(output)
    except json.JSONDecodeError as error:
        raise BuildError(f"{plugin.name}: chris_plugin_info printed no JSON descriptor ({error})") from None
    problems = registration_problems(descriptor)
    if problems:
        raise BuildError(f"{plugin.name}: the descriptor breaks ChRIS's registration rules: {'; '.join(problems)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(descriptor))
    print(f"wrote {target}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python docker/build.py", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=REGISTRY, help="image registry and owner (default: %(default)s)")
    parser.add_argument("--plugin", action="append", choices=[p.name for p in PLUGINS], help="only this plugin (repeatable; default: all)")
    parser.add_argument("--platforms", default=",".join(PLATFORMS), help="comma-separated target platforms (default: %(default)s)")
    parser.add_argument("--no-push", dest="push", action="store_false", help="build without pushing; the first platform is loaded locally")
    parser.add_argument("--descriptor-dir", type=Path, help="write the descriptors here instead of next to each plugin")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build, push and describe every selected plugin; 0 when all went through."""
    args = parse_args(argv)
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    plugins = [p for p in PLUGINS if not args.plugin or p.name in args.plugin]
    revision = git_revision()
    try:
        if not args.dry_run:
            check_builder(platforms)
        for plugin in plugins:
            target = (args.descriptor_dir / plugin.descriptor.name) if args.descriptor_dir else plugin.descriptor
            commands = build_commands(plugin, args.registry, platforms, revision, args.push)
            describe = descriptor_command(plugin, args.registry, platforms[0])
            if args.dry_run:
                print("\n".join("+ " + shlex.join(c) for c in commands) + f"\n+ {shlex.join(describe)} > {target}")
                continue
            for command in commands:
                run(command)
            write_descriptor(plugin, run(describe, capture=True), target)
    except BuildError as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
