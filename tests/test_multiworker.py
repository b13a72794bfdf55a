"""`python -m training` under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, one bundle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from brainseg_tf.bundle import read_bundle_info
from brainseg_tf.config import QUICK_OVERRIDES, load_config
from brainseg_tf.datasets import build_cache

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def test_two_workers_train_and_only_the_chief_writes_the_bundle(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    build_cache(load_config(overrides={**QUICK_OVERRIDES, "data.cache_dir": str(cache_dir)}))  # once, not by both workers
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "training", "multiclass", "--quick", "--run-dir", str(run_dir),
        "--set", f"data.cache_dir={cache_dir}", "--set", "training.strategy=multiworker",
        "--set", "training.epochs=1", "--set", "generator.samples_per_epoch=8",
    ]
    workers = []
    for index in range(2):
        environment = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = (tmp_path / f"worker{index}.log").open("w")
        workers.append((subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        statuses = [process.wait(timeout=300) for process, _ in workers]
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = [(tmp_path / f"worker{index}.log").read_text() for index in range(2)]
    assert statuses == [0, 0], logs
    assert all("strategy: multiworker (CollectiveAllReduceStrategy) with 2 replica(s)" in log for log in logs), logs
    assert "Wrote multiclass bundle" in logs[0] and "Wrote multiclass bundle" not in logs[1]
    info = read_bundle_info(run_dir / "bundle")
    assert info.family == "multiclass" and "val_loss" in info.metrics
    assert json.loads((run_dir / "checkpoints" / "state.json").read_text())["epoch"] == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["bundle", "checkpoints", "config.yaml", "log.csv", "tensorboard"]
