"""Process-wide TensorFlow settings of the entry points: oneDNN by default, a quiet start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainseg_tf.runtime import ONEDNN_VARIABLE, prefer_onednn

REPO = Path(__file__).resolve().parents[1]


def test_prefer_onednn_turns_it_on_unless_the_environment_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    prefer_onednn()
    assert os.environ[ONEDNN_VARIABLE] == "1"
    monkeypatch.setenv(ONEDNN_VARIABLE, "0")
    prefer_onednn()
    assert os.environ[ONEDNN_VARIABLE] == "0"


def _stderr_of(code: str) -> str:
    environment = {**os.environ, ONEDNN_VARIABLE: "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120, check=True)
    return done.stderr


def test_tensorflow_starts_without_notices_on_stderr() -> None:
    loud = _stderr_of("import tensorflow as tf; tf.constant(1.0)")
    quiet = _stderr_of("from brainseg_tf.runtime import import_tensorflow_quietly as q; q(); import sys, tensorflow as tf; "
                       "tf.constant(1.0); print('after', file=sys.stderr)")
    assert "oneDNN" in loud  # what the plain import prints here, whatever TF_CPP_MIN_LOG_LEVEL says
    assert quiet == "after\n"  # stderr works again once TensorFlow is in


def _cgroup(tmp_path, files: dict[str, str], proc: str = "0::/\n"):
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


@pytest.mark.parametrize(
    ("files", "proc", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, "0::/\n", (2, "cgroup v2 cpu.max")),
        ({"cpu.max": "150000 100000\n"}, "0::/\n", (2, "cgroup v2 cpu.max")),  # 1.5 CPUs: rounded up
        ({"cpu.max": "50000 100000\n"}, "0::/\n", (1, "cgroup v2 cpu.max")),  # half a CPU: at least one thread
        ({"kubepods/pod1/cpu.max": "100000 100000\n", "cpu.max": "max 100000\n"}, "0::/kubepods/pod1\n", (1, "cgroup v2 cpu.max")),
        ({"cpu.max": "max 100000\n"}, "0::/\n", (None, "affinity mask")),  # no quota
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu,cpuacct:/\n", (1, "cgroup v1 cfs quota")),
        ({"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "50000\n"},
         "4:cpu,cpuacct:/docker/abc\n", (2, "cgroup v1 cfs quota")),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu:/\n", (None, "affinity mask")),
        ({"cpu.max": "garbage\n"}, "0::/\n", (None, "affinity mask")),
        ({}, "", (None, "affinity mask")),
    ],
)
def test_cpu_budget_reads_the_cgroup_quota_then_the_affinity_mask(tmp_path, files, proc, expected) -> None:
    from brainseg_tf.runtime import cpu_budget

    affinity = len(os.sched_getaffinity(0))
    root, proc_file = _cgroup(tmp_path, files, proc)
    budget = cpu_budget(root, proc_file)
    cpus, source = expected
    assert budget.source == source
    assert budget.cpus == (affinity if cpus is None else min(cpus, affinity))


def test_a_quota_above_the_affinity_mask_is_capped(tmp_path) -> None:
    from brainseg_tf.runtime import cpu_budget

    root, proc_file = _cgroup(tmp_path, {"cpu.max": "6400000 100000\n"})  # 64 CPUs of quota
    assert cpu_budget(root, proc_file).cpus == len(os.sched_getaffinity(0))


def test_use_cpu_budget_sizes_the_pools_from_the_budget_unless_told(monkeypatch, caplog) -> None:
    import logging

    import brainseg_tf.runtime as runtime

    calls = []
    monkeypatch.setattr(runtime, "configure_threads", calls.append)
    monkeypatch.setattr(runtime, "cpu_budget", lambda: runtime.CpuBudget(3, "cgroup v2 cpu.max"))
    with caplog.at_level(logging.INFO, logger="brainseg_tf.runtime"):
        assert runtime.use_cpu_budget(None) == 3 and runtime.use_cpu_budget(0) == 3 and runtime.use_cpu_budget(5) == 5
    assert calls == [3, 3, 5]
    assert [r.getMessage() for r in caplog.records] == ["TensorFlow threads: 3 (cgroup v2 cpu.max)"] * 2


def test_the_budget_keeps_the_pools_of_a_tensorflow_already_started(monkeypatch) -> None:
    import brainseg_tf.runtime as runtime

    def started(threads):
        raise ValueError("Expected to set threads before TensorFlow starts. Received: ...")

    monkeypatch.setattr(runtime, "configure_threads", started)
    monkeypatch.setattr(runtime, "cpu_budget", lambda: runtime.CpuBudget(2, "affinity mask"))
    assert runtime.use_cpu_budget(0) == 2  # a default: kept quiet
    with pytest.raises(ValueError, match="before TensorFlow starts"):
        runtime.use_cpu_budget(4)  # asked for: refused loudly


def test_peak_rss_is_the_processs_own_not_its_parents() -> None:
    """A spawned child reports its own high-water mark, not the larger resident size of its parent (ru_maxrss would)."""
    import multiprocessing

    from brainseg_tf.runtime import peak_rss_bytes

    ballast = np.ones(40_000_000, np.float64)  # 320 MB held by this (parent) process
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(peak_rss_bytes)
    assert peak_rss_bytes() > ballast.nbytes
    assert child < ballast.nbytes
