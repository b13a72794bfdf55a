"""Run a ChRIS plugin exactly as ChRIS runs it: ``<python> <selfpath>/<selfexec> [flags] INPUTDIR OUTPUTDIR``.

The plugin runs from a virtual environment made with Debian's ``/usr/bin/python3`` outside /root
(other UIDs cannot enter /root), holding a regular (non-editable) install of the project and the
plugins, with the model bundles copied next to it as an image bakes them in. Each run: an arbitrary
non-root UID with group 0 and no capabilities (setpriv), no network (a fresh network namespace with
only a downed loopback), the input tree read-only, HOME unset or unwritable, an empty environment
but for PATH, TMPDIR and the models folder (the image's ENV).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = {"multiclass": "pl-brainseg-multiclass", "ensemble": "pl-brainseg-ensemble"}
SYSTEM_PYTHON = "/usr/bin/python3"
RUN_UID = 48213  # arbitrary, as OpenShift assigns; group 0 as OpenShift gives
VENV_ROOT = Path(os.environ.get("BRAINSEG_PLUGIN_VENV", "/tmp/brainseg-plugin-venv"))


@dataclass(frozen=True)
class PluginEnvironment:
    """The installed plugins: their interpreter, console scripts and baked-in models."""

    python: Path
    bin_dir: Path
    models_dir: Path

    def selfexec(self, family: str) -> Path:
        return self.bin_dir / f"brainseg_{family}"


@dataclass(frozen=True)
class PluginRun:
    """What one ChRIS-style run returned."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Stack:
    """A Python installation to replay: the pip commands that install its dependencies, and what keys them.

    Attributes:
        name: short name, part of the venv folder.
        installs: pip ``install`` argument lists, run in order in a fresh venv.
        sources: files whose content decides the installation (a change makes a new venv).
    """

    name: str
    installs: tuple[tuple[str, ...], ...]
    sources: tuple[Path, ...]


MAIN_STACK = Stack(
    "main",
    (("-c", str(REPO / "constraints.txt"), f"{REPO}[cpu,chris]"),),
    (REPO / "constraints.txt", REPO / "pyproject.toml"),
)
"""The project's own pins: what `make` installs, and what the x86_64 image holds over its TensorFlow base."""


def install_plugins(stack: Stack = MAIN_STACK) -> PluginEnvironment:
    """Create (once per stack content) the venv and install the current code into it (every call)."""
    venv = VENV_ROOT / f"{stack.name}-{_content_key(stack.sources)}"
    python = venv / "bin" / "python"
    if not (venv / ".dependencies-installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        _pip(python, "install", "--upgrade", "pip", "setuptools>=77")
        for arguments in stack.installs:
            _pip(python, "install", *arguments)
        (venv / ".dependencies-installed").touch()
    plugin_dirs = [str(REPO / "chris_plugins" / name) for name in PLUGINS.values()]
    build = Path(tempfile.mkdtemp(prefix="brainseg-build-"))
    try:  # a copy of the tree: building in place would leave build/ and *.egg-info in the repository
        shutil.copytree(REPO, build / "src", ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "build", "*.egg-info", "__pycache__", "models"))
        sources = [str(build / "src"), *(str(build / "src" / Path(d).relative_to(REPO)) for d in plugin_dirs)]
        _pip(python, "install", "--no-deps", "--force-reinstall", "--no-build-isolation", *sources)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    models = venv / "models"
    shutil.rmtree(models, ignore_errors=True)
    shutil.copytree(REPO / "models", models)
    _open_for_everyone(VENV_ROOT)
    return PluginEnvironment(python, venv / "bin", models)


def run_python(environment: PluginEnvironment, code: str) -> str:
    """Run a snippet with the environment's Python; its stdout."""
    return subprocess.run([str(environment.python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _content_key(files: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _pip(python: Path, *arguments: str) -> None:
    subprocess.run([str(python), "-m", "pip", "--quiet", *arguments], check=True)


def _open_for_everyone(root: Path) -> None:
    """World-readable files, world-enterable folders (pip keeps root's umask, but be sure)."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        if mode & extra != extra:
            path.chmod(mode | extra)


def make_read_only(root: Path) -> None:
    """Input as ChRIS mounts it: nothing under it writable by anyone but root."""
    for path in [*sorted(root.rglob("*"), reverse=True), root]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def shared_folder(prefix: str) -> Path:
    """A fresh folder under /tmp that the plugin's UID can enter (pytest's tmp_path is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def run_as_chris(environment: PluginEnvironment, family: str, flags: list[str], inputdir: Path, outputdir: Path,
                 tmpdir: Path, home: str | None = None) -> PluginRun:
    """Run one plugin as ChRIS does, as `RUN_UID`:0 without capabilities or network.

    ``outputdir`` is created group-0 writable (as ChRIS prepares it); ``tmpdir`` becomes TMPDIR.
    """
    outputdir.mkdir(parents=True, exist_ok=True)
    outputdir.chmod(0o775)
    tmpdir.mkdir(parents=True, exist_ok=True)
    tmpdir.chmod(0o1777)
    variables = {"PATH": f"{environment.bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmpdir), "BRAINSEG_MODELS_DIR": str(environment.models_dir)}
    if home is not None:
        variables["HOME"] = home
    command = [
        "unshare", "--net", "--",
        "setpriv", f"--reuid={RUN_UID}", "--regid=0", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        "env", "-i", *(f"{k}={v}" for k, v in variables.items()),
        str(environment.python), str(environment.selfexec(family)), *flags, str(inputdir), str(outputdir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=900, check=False)
    return PluginRun(done.returncode, done.stdout, done.stderr)


def files_owned_by_run_uid(allowed: list[Path]) -> list[Path]:
    """Files and folders anywhere on the root file system owned by `RUN_UID`, outside ``allowed`` folders."""
    found = subprocess.run(
        ["find", "/", "-xdev", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o", "-user", str(RUN_UID), "-print"],
        capture_output=True, text=True, check=False,
    ).stdout.splitlines()
    return [Path(p) for p in found if not any(Path(p).is_relative_to(a) for a in allowed)]
