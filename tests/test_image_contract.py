"""Image contracts: each plugin image's Python installation, replayed on x86 in a fresh venv, runs both plugins as ChRIS would.

No Docker engine and no Power9 machine here, so the images' software stacks are replayed from the
pin files their Dockerfile installs (docker/plugins/Dockerfile):

- x86_64: TensorFlow at the base image's tag (= constraints.txt's tensorflow_cpu) and
  docker/amd64/requirements.txt under constraints.txt;
- ppc64le: docker/ppc64le/environment.yml (Open-CE 1.11 via RocketCE: TensorFlow 2.14.1, Keras 2.14,
  no Keras 3) as the same versions from PyPI, then docker/ppc64le/requirements.txt with --no-deps.

The plugins must load their bundles through the SavedModel signature on both, and the Power9 stack's
label maps must agree with the x86 stack's on at least 99.9 % of voxels. `make test-images` runs this file.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from chris_harness import REPO, PluginEnvironment, Stack, install_plugins, make_read_only, run_as_chris, run_python, shared_folder

from brainseg_tf.io import load_label_map

pytestmark = [
    pytest.mark.images,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to another UID and network namespace needs root (CI runs as root)"),
]

EXAMPLE_HEAD = REPO / "chris_plugins" / "pl-brainseg-multiclass" / "examples" / "incoming" / "synthetic_head_T1w.nii.gz"
"""A 3 mm synthetic full head (`make examples`): the brain extractor's networks run on it."""
PPC64LE = REPO / "docker" / "ppc64le"
AMD64_REQUIREMENTS = REPO / "docker" / "amd64" / "requirements.txt"
MINIMUM_AGREEMENT = 0.999
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}
NO_CP311_WHEEL = {"h5py==3.7.0": "h5py==3.8.0"}
"""Pins PyPI cannot replay on CPython 3.11 (no wheel), mapped to the nearest release with one; the
plugins never import h5py (TensorFlow merely depends on it)."""


def tensorflow_pin() -> str:
    """The x86 base image's TensorFlow, as pinned for the project in constraints.txt."""
    found = re.search(r"^tensorflow_cpu==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert found, "constraints.txt pins tensorflow_cpu"
    return f"tensorflow_cpu=={found.group(1)}"


def amd64_stack() -> Stack:
    installs = (("-c", str(REPO / "constraints.txt"), tensorflow_pin(), "-r", str(AMD64_REQUIREMENTS)),)
    return Stack("amd64", installs, (REPO / "constraints.txt", AMD64_REQUIREMENTS))


def ppc64le_stack() -> Stack:
    """The conda environment's pins as PyPI requirements (python itself is the venv's), then the pip part."""
    environment = yaml.safe_load((PPC64LE / "environment.yml").read_text())
    conda = [str(d) for d in environment["dependencies"] if isinstance(d, str) and not d.startswith("python=")]
    pins = []
    for pin in conda:
        name, _, version = pin.partition("==")
        requirement = f"{CONDA_TO_PYPI.get(name, name)}=={version.split('=')[0]}"
        pins.append(NO_CP311_WHEEL.get(requirement, requirement))
    installs = (tuple(pins), ("--no-deps", "-r", str(PPC64LE / "requirements.txt")))
    return Stack("ppc64le", installs, (PPC64LE / "environment.yml", PPC64LE / "requirements.txt"))


@pytest.fixture(scope="module")
def mni_input() -> Iterator[tuple[Path, list[Path]]]:
    """The MNI152 T1 (nilearn's package data, skull-stripped: the extractor takes it by its zeros) and the plugins'
    example full head (its three extractor networks run) in a read-only input folder; every folder used is removed
    at the end."""
    import nibabel as nib
    from nilearn import datasets

    root = shared_folder("brainseg-in-")
    nib.save(datasets.load_mni152_template(resolution=1), root / "mni152.nii.gz")
    shutil.copy(EXAMPLE_HEAD, root / "head.nii.gz")
    make_read_only(root)
    used = [root]
    yield root, used
    for folder in used:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stacks() -> dict[str, PluginEnvironment]:
    return {"amd64": install_plugins(amd64_stack()), "ppc64le": install_plugins(ppc64le_stack())}


def test_the_ppc64le_replay_is_the_open_ce_stack_without_keras_3(stacks: dict[str, PluginEnvironment]) -> None:
    versions = run_python(stacks["ppc64le"], "import tensorflow as tf, keras, numpy; print(tf.__version__, keras.__version__, numpy.__version__)")
    assert versions.split()[:2] == ["2.14.1", "2.14.0"], versions
    assert versions.split()[2].startswith("1.26."), versions


def test_the_amd64_replay_has_the_projects_tensorflow_and_keras(stacks: dict[str, PluginEnvironment]) -> None:
    versions = run_python(stacks["amd64"], "import tensorflow as tf, keras; print(tf.__version__, keras.__version__)").split()
    assert f"tensorflow_cpu=={versions[0]}" == tensorflow_pin() and versions[1].startswith("3."), versions


@pytest.mark.parametrize("family", ["multiclass", "ensemble"])
def test_both_images_segment_the_mni152_t1_alike(stacks: dict[str, PluginEnvironment], mni_input: tuple[Path, list[Path]], family: str) -> None:
    inputdir, used = mni_input
    labels = {}
    for arch, environment in stacks.items():
        out, tmp = shared_folder(f"brainseg-out-{arch}-"), shared_folder(f"brainseg-tmp-{arch}-")
        used += [out, tmp]
        run = run_as_chris(environment, family, [], inputdir, out, tmp)
        assert run.returncode == 0, f"{arch}: {run.stdout}{run.stderr}"
        assert sorted(p.name for p in out.iterdir()) == [f"{stem}_{kind}" for stem in ("head", "mni152")
                                                         for kind in ("labels.nii.gz", "qc.png", "volumes.csv", "volumes.json")]
        labels[arch] = [load_label_map(out / f"{stem}_labels.nii.gz").array for stem in ("head", "mni152")]
    for index, stem in enumerate(("head", "mni152")):
        amd64, ppc64le = labels["amd64"][index], labels["ppc64le"][index]
        agreement = float(np.mean(amd64 == ppc64le))
        print(f"{family}, {stem}: the amd64 and ppc64le stacks agree on {agreement:.5%} of voxels ({int(np.sum(amd64 != ppc64le))} differ)")
        assert (amd64 > 0).sum() > 0.05 * amd64.size, f"{family}, {stem}: no brain labelled"
        assert agreement >= MINIMUM_AGREEMENT, f"{family}, {stem}: the stacks agree on {agreement:.5%} of voxels"
