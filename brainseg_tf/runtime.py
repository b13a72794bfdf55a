"""Process-wide settings of the TensorFlow runtime, made once by entry points (CLIs, plugins, jobs) before any model loads."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs a process may keep busy, and where that number comes from.

    Attributes:
        cpus: whole CPUs, at least 1.
        source: ``"cgroup v2 cpu.max"``, ``"cgroup v1 cfs quota"`` or ``"affinity mask"``.
    """

    cpus: int
    source: str


def cpu_budget(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> CpuBudget:
    """The CPUs this process may use: its cgroup's CPU quota when one is set, else its affinity mask.

    A container scheduled with a CPU limit (Kubernetes ``limits.cpu``, ChRIS ``cpu_limit``) on a node of many
    cores sees every core in its affinity mask, but the kernel throttles it to the quota: thread pools
    sized from the core count then wait on the throttle. The quota is read from cgroup v2's ``cpu.max``
    (``"<quota> <period>"`` or ``"max <period>"``) or cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    (-1: none), at the process's own cgroup path (``/proc/self/cgroup``) or at the mount's root, rounded
    up to whole CPUs and never above the affinity mask.
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for quota, source in _cgroup_quotas(cgroup_root, _cgroup_paths(proc_cgroup)):
        if quota is not None:
            return CpuBudget(max(1, min(affinity, math.ceil(quota))), source)
    return CpuBudget(max(1, affinity), "affinity mask")


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """The process's cgroup path per hierarchy: ``""`` for cgroup v2, the controller names for v1."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2].lstrip("/")
    return paths


def _cgroup_quotas(root: Path, paths: dict[str, str]):
    """(CPUs of quota or None, source) from cgroup v2, then v1, at the process's path then the root."""
    for folder in dict.fromkeys([root / paths.get("", ""), root]):
        yield _v2_quota(folder / "cpu.max"), "cgroup v2 cpu.max"
    for controller in ("cpu", "cpu,cpuacct"):
        base = root / controller
        for folder in dict.fromkeys([base / paths.get("cpu", ""), base]):
            yield _v1_quota(folder), "cgroup v1 cfs quota"


def _v2_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def prefer_onednn() -> None:
    """Ask TensorFlow for its oneDNN CPU kernels unless the environment already chose.

    TensorFlow's x86 builds leave oneDNN off on CPUs without AVX-512 VNNI/BF16/AMX (most of what a
    cluster runs); with it, the bundles' folded convolution + bias + ReLU run as one fused kernel,
    about twice as fast (docs/benchmarks.md). ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment keeps
    it off; builds without oneDNN (ppc64le) ignore the variable. TensorFlow reads it once, when it
    is imported: entry points call this first.
    """
    os.environ.setdefault(ONEDNN_VARIABLE, "1")
    if "tensorflow" in sys.modules:
        logger.debug("%s set after TensorFlow was imported: it may not take effect", ONEDNN_VARIABLE)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the notices its native code prints while starting discarded.

    Before its logging is set up, TensorFlow writes start-up notices straight to file descriptor 2,
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says (e.g. "oneDNN custom operations are on" and absl's
    preamble). Job logs keep one line per failure on stderr, so entry points import it through
    this. Python errors still raise; a TensorFlow already imported is left as it is.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def configure_threads(threads: int | None) -> None:
    """Limit TensorFlow's CPU threads (intra-op to ``threads``, inter-op to 1-2); None keeps its default (all cores).

    Entry points that serve users pass ``cpu_budget().cpus`` when the user gave no number (see `use_cpu_budget`).
    Must run before TensorFlow executes anything: the settings cannot change afterwards.

    Raises:
        ValueError: ``threads`` below 1, or TensorFlow already initialised.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"Expected threads >= 1. Received: threads={threads}")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError as error:
        raise ValueError(f"Expected to set threads before TensorFlow starts. Received: {error}") from None
    logger.debug("TensorFlow limited to %d intra-op threads", threads)


def use_cpu_budget(threads: int | None) -> int:
    """Configure TensorFlow's threads: ``threads`` when given, else the process's `cpu_budget` (logged once).

    The budget is only a default: where TensorFlow already started in this process, its pools are kept.

    Returns:
        The intra-op threads asked for.

    Raises:
        ValueError: as `configure_threads`, for ``threads`` given.
    """
    if threads:
        configure_threads(threads)
        return threads
    budget = cpu_budget()
    try:
        configure_threads(budget.cpus)
    except ValueError:  # TensorFlow already runs in this process (e.g. a second in-process run): its pools stay
        logger.debug("TensorFlow already started: its thread pools stay as they are")
        return budget.cpus
    logger.info("TensorFlow threads: %d (%s)", budget.cpus, budget.source)
    return budget.cpus


def peak_rss_bytes() -> int:
    """This process's own peak resident set size: Linux's ``VmHWM``, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: a spawned process keeps there the resident size its parent had when it
    forked (preserved across the exec), so a measuring child would report at least its parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
