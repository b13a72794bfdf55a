"""docker/build.py without a Docker engine: its dry run, its checks before building, and a full run
against a stand-in `docker` that records its arguments and prints the committed descriptors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chris_plugins.descriptors import IMAGE_VENV, PLUGINS, PUBLIC_REPO

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docker" / "build.py"
REGISTRY = "registry.example.org/team"

FAKE_DOCKER = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
mode = os.environ.get("FAKE_DOCKER_MODE", "ok")
if args[:2] == ["buildx", "version"]:
    sys.exit(1 if mode == "no-buildx" else 0)
if args[:2] == ["buildx", "inspect"]:
    extra = "" if mode == "no-ppc64le" else ", linux/ppc64le"
    print("Name: brainseg\\nDriver: docker-container\\nPlatforms: linux/amd64*, linux/amd64/v2, linux/386" + extra)
    sys.exit(0)
if args[:2] == ["buildx", "build"]:
    sys.exit(5 if mode == "build-fails" else 0)
if args[0] == "run":
    plugin = args[-1]
    descriptor = json.loads(Path(os.environ["FAKE_DOCKER_REPO"], "chris_plugins", plugin, plugin + ".json").read_text())
    if mode == "bad-descriptor":
        descriptor["min_cpu_limit"] = "2"
    print(json.dumps(descriptor))
    sys.exit(0)
sys.exit(3)
"""


def _build(*args: str, path: str, mode: str = "ok", log: Path | None = None) -> subprocess.CompletedProcess:
    environment = {"PATH": path, "FAKE_DOCKER_MODE": mode, "FAKE_DOCKER_REPO": str(REPO),
                   "FAKE_DOCKER_LOG": str(log or Path(os.devnull)), "BRAINSEG_REGISTRY": REGISTRY}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=environment,
                          cwd=REPO, timeout=120, check=False)


@pytest.fixture
def fake_docker(tmp_path: Path) -> Path:
    """A folder holding only a stand-in `docker`, to put on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    docker = folder / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    return folder


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("build.py: "), done.stderr
    return lines[0]


def test_dry_run_prints_one_multi_arch_build_and_push_and_one_descriptor_run_per_plugin(tmp_path: Path) -> None:
    done = _build("--dry-run", path=str(tmp_path))  # no docker on PATH: nothing is run
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 * len(PLUGINS)
    for plugin, build, describe in zip(PLUGINS, lines[::2], lines[1::2]):
        image = f"{REGISTRY}/{plugin.name}:{plugin.version()}"
        assert build.startswith("+ docker buildx build --platform linux/amd64,linux/ppc64le -f docker/plugins/Dockerfile ")
        assert f"--target {plugin.name} --build-arg VERSION={plugin.version()} " in build
        assert f" -t {image} --push ." in build
        assert describe.startswith(f"+ docker run --rm --platform linux/amd64 --network none {image} {IMAGE_VENV}/bin/chris_plugin_info ")
        assert describe.endswith(f"--dock-image {image} --public-repo {PUBLIC_REPO} {plugin.name} > {plugin.descriptor}")


def test_dry_run_without_push_builds_every_platform_then_loads_the_first(tmp_path: Path) -> None:
    done = _build("--dry-run", "--no-push", "--plugin", "pl-brainseg-ensemble", path=str(tmp_path))
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and "--push" not in done.stdout
    assert "--platform linux/amd64,linux/ppc64le" in lines[0] and "--load" not in lines[0]
    assert "--platform linux/amd64 " in lines[1] and lines[1].endswith("--load .")


def test_stops_when_docker_is_missing(tmp_path: Path) -> None:
    assert "docker not found on PATH" in _one_error_line(_build(path=str(tmp_path)))


def test_stops_when_buildx_is_missing(fake_docker: Path) -> None:
    assert "docker buildx is not available" in _one_error_line(_build(path=str(fake_docker), mode="no-buildx"))


def test_stops_when_the_builder_cannot_build_ppc64le(fake_docker: Path, tmp_path: Path) -> None:
    log = tmp_path / "docker.log"
    line = _one_error_line(_build(path=str(fake_docker), mode="no-ppc64le", log=log))
    assert "cannot build linux/ppc64le" in line and "binfmt" in line
    assert not any(json.loads(entry)[:2] == ["buildx", "build"] for entry in log.read_text().splitlines())


def test_builds_pushes_and_writes_each_descriptor_from_inside_its_image(fake_docker: Path, tmp_path: Path) -> None:
    log, out = tmp_path / "docker.log", tmp_path / "descriptors"
    done = _build("--descriptor-dir", str(out), path=str(fake_docker), log=log)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(entry) for entry in log.read_text().splitlines()]
    builds = [c for c in calls if c[:2] == ["buildx", "build"]]
    runs = [c for c in calls if c[0] == "run"]
    assert [b[b.index("--target") + 1] for b in builds] == [p.name for p in PLUGINS]
    assert all("--push" in b and b[b.index("--platform") + 1] == "linux/amd64,linux/ppc64le" for b in builds)
    assert [r[-1] for r in runs] == [p.name for p in PLUGINS]
    for plugin in PLUGINS:
        assert (out / plugin.descriptor.name).read_text() == plugin.descriptor.read_text()


def test_a_failed_build_stops_before_any_descriptor_is_written(fake_docker: Path, tmp_path: Path) -> None:
    out = tmp_path / "descriptors"
    line = _one_error_line(_build("--descriptor-dir", str(out), path=str(fake_docker), mode="build-fails"))
    assert "`docker buildx build ...` failed with exit status 5" in line
    assert not out.exists()


def test_a_descriptor_chris_would_refuse_is_not_written(fake_docker: Path, tmp_path: Path) -> None:
    out = tmp_path / "descriptors"
    line = _one_error_line(_build("--descriptor-dir", str(out), path=str(fake_docker), mode="bad-descriptor"))
    assert "pl-brainseg-multiclass: the descriptor breaks ChRIS's registration rules: min_cpu_limit" in line
    assert not out.exists()
