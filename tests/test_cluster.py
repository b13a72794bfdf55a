"""Cluster jobs: TF_CONFIG from a Kubernetes Indexed Job, the strategy hook, and the rendered manifests."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from brainseg_tf.errors import ConfigError
from brainseg_tf.labels import TISSUE
from training import strategy as strategy_module
from training.cluster import DEFAULT_PORT, tf_config_for_index, tf_config_from_environment, worker_addresses

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docker" / "cluster" / "examples"
PYTHON = "/opt/brainseg/venv/bin/python"


def _load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("cluster_render", REPO / "docker" / "cluster" / "render.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look their module up by name
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


render = _load_renderer()

# ---------------------------------------------------------------- TF_CONFIG


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_every_index_gets_the_same_cluster_and_its_own_task(workers: int) -> None:
    configs = [tf_config_for_index("train", "workers", workers, index, 2345) for index in range(workers)]
    expected_cluster = {"worker": [f"train-{i}.workers:2345" for i in range(workers)]}
    for index, config in enumerate(configs):
        assert config == {"cluster": expected_cluster, "task": {"type": "worker", "index": index}}
    assert worker_addresses("train", "workers", workers, 2345) == expected_cluster["worker"]


def test_default_port() -> None:
    assert tf_config_for_index("job", "svc", 1, 0)["cluster"]["worker"] == [f"job-0.svc:{DEFAULT_PORT}"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"index": 2}, r"Expected index in 0\.\.1 \(workers=2\)\. Received: index=2"),
        ({"index": -1}, "Received: index=-1"),
        ({"index": True}, "Received: index=True"),
        ({"workers": 0}, "Expected workers >= 1. Received: workers=0"),
        ({"port": 0}, r"Expected port in 1\.\.65535\. Received: port=0"),
        ({"port": 70000}, "Received: port=70000"),
        ({"job": "Train"}, "Expected job as a DNS label.*Received: job='Train'"),
        ({"job": "train_1"}, "Received: job='train_1'"),
        ({"job": "a" * 62}, "at most 61 characters"),  # <job>-<index> must fit 63 characters
        ({"service": "1svc"}, "Received: service='1svc'"),
        ({"service": ""}, "Received: service=''"),
    ],
)
def test_bad_arguments_raise_one_line_errors_naming_them(arguments: dict[str, Any], message: str) -> None:
    values = {"job": "train", "service": "workers", "workers": 2, "index": 0, "port": 2222, **arguments}
    with pytest.raises(ConfigError, match=message) as error:
        tf_config_for_index(**values)
    assert "\n" not in str(error.value)


INDEXED_JOB = {"BRAINSEG_JOB_NAME": "brainseg-multiclass-nodes", "BRAINSEG_SERVICE": "brainseg-multiclass-nodes",
               "BRAINSEG_WORKERS": "3", "JOB_COMPLETION_INDEX": "2"}


def test_environment_of_an_indexed_job() -> None:
    spec = json.loads(tf_config_from_environment({**INDEXED_JOB, "BRAINSEG_WORKER_PORT": " 4000 "}))
    assert spec == tf_config_for_index("brainseg-multiclass-nodes", "brainseg-multiclass-nodes", 3, 2, 4000)
    assert json.loads(tf_config_from_environment(INDEXED_JOB))["cluster"]["worker"][0].endswith(f":{DEFAULT_PORT}")


@pytest.mark.parametrize("environ", [{}, {"JOB_COMPLETION_INDEX": "0"}, {"BRAINSEG_WORKERS": "  ", "PATH": "/bin"}])
def test_outside_an_indexed_job_there_is_nothing_to_derive(environ: dict[str, str]) -> None:
    assert tf_config_from_environment(environ) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BRAINSEG_SERVICE": None}, "BRAINSEG_SERVICE is not set"),
        ({"BRAINSEG_JOB_NAME": ""}, "BRAINSEG_JOB_NAME is not set"),
        ({"JOB_COMPLETION_INDEX": None}, "JOB_COMPLETION_INDEX is not set.*completionMode: Indexed"),
        ({"BRAINSEG_WORKERS": "two"}, "Expected BRAINSEG_WORKERS as a whole number. Received: BRAINSEG_WORKERS='two'"),
        ({"BRAINSEG_WORKERS": "0"}, "Expected BRAINSEG_WORKERS >= 1"),
        ({"JOB_COMPLETION_INDEX": "3"}, r"Expected JOB_COMPLETION_INDEX in 0\.\.2 \(BRAINSEG_WORKERS=3\)"),
        ({"BRAINSEG_WORKER_PORT": "http"}, "Received: BRAINSEG_WORKER_PORT='http'"),
        ({"BRAINSEG_WORKER_PORT": "99999"}, "Expected BRAINSEG_WORKER_PORT in 1..65535"),
        ({"BRAINSEG_JOB_NAME": "My_Job"}, "Received: BRAINSEG_JOB_NAME='My_Job'"),
    ],
)
def test_bad_environment_raises_one_line_errors_naming_the_variable(change: dict[str, str | None], message: str) -> None:
    environ = {key: value for key, value in {**INDEXED_JOB, **change}.items() if value is not None}
    with pytest.raises(ConfigError, match=message) as error:
        tf_config_from_environment(environ)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- the hook in training.strategy


class _Started(Exception):
    """Raised instead of starting a real MultiWorkerMirroredStrategy."""


@pytest.fixture
def no_real_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise _Started

    monkeypatch.setattr(strategy_module.tf.distribute, "MultiWorkerMirroredStrategy", refuse)
    for name in (*INDEXED_JOB, "BRAINSEG_WORKER_PORT", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_real_strategy")
def test_multiworker_derives_tf_config_from_the_indexed_job(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name, value in INDEXED_JOB.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO, logger="training.strategy"), pytest.raises(_Started):
        strategy_module.make_strategy("multiworker")
    assert json.loads(strategy_module.os.environ["TF_CONFIG"]) == json.loads(tf_config_from_environment(INDEXED_JOB))
    assert "TF_CONFIG derived from the Indexed Job" in caplog.text


@pytest.mark.usefixtures("no_real_strategy")
def test_a_tf_config_set_by_the_scheduler_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    given = json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}})
    monkeypatch.setenv("TF_CONFIG", given)
    for name, value in INDEXED_JOB.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(_Started):
        strategy_module.make_strategy("multiworker")
    assert strategy_module.os.environ["TF_CONFIG"] == given


@pytest.mark.usefixtures("no_real_strategy")
def test_a_broken_indexed_job_fails_before_the_strategy_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINSEG_JOB_NAME", "train")
    with pytest.raises(ConfigError, match="BRAINSEG_SERVICE is not set"):
        strategy_module.make_strategy("multiworker")
    assert "TF_CONFIG" not in strategy_module.os.environ


@pytest.mark.usefixtures("no_real_strategy")
def test_other_strategies_ignore_the_indexed_job(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in INDEXED_JOB.items():
        monkeypatch.setenv(name, value)
    strategy_module.make_strategy("default")
    assert "TF_CONFIG" not in strategy_module.os.environ


# ---------------------------------------------------------------- the manifests


def _example_objects() -> dict[str, list[dict[str, Any]]]:
    return {path.name: [o for o in yaml.safe_load_all(path.read_text()) if o is not None] for path in sorted(EXAMPLES.glob("*.yaml"))}


OBJECTS = _example_objects()


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [o for objects in OBJECTS.values() for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{file}:{o['metadata']['name']}", o) for file, objects in OBJECTS.items() for o in objects if o["kind"] in ("Job", "Pod")]


def test_the_committed_examples_are_what_the_renderer_writes_now() -> None:
    rendered = render.render(render.ClusterParams())
    assert sorted(rendered) == sorted(OBJECTS), "run: python docker/cluster/render.py"
    stale = [name for name, text in rendered.items() if (EXAMPLES / name).read_text() != text]
    assert not stale, f"{stale} differ from the renderer's output; run: python docker/cluster/render.py"
    assert render.main(["--check"]) == 0


def test_renderer_defaults_follow_the_project() -> None:
    assert render.ClusterParams().members == TISSUE.names[1:]
    assert render.DEFAULT_TAG == importlib.metadata.version("brainseg-tf")  # the image tag follows the project's version


def test_every_object_has_api_version_kind_and_name() -> None:
    assert OBJECTS
    for file, objects in OBJECTS.items():
        assert objects, file
        for obj in objects:
            assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), (file, obj)
            assert "namespace" not in obj["metadata"], file  # left to kubectl -n / oc project


@pytest.mark.parametrize(("where", "obj"), _workloads(), ids=[where for where, _ in _workloads()])
def test_every_workload_runs_the_image_unprivileged_with_the_volume(where: str, obj: dict[str, Any]) -> None:
    spec = _pod_spec(obj)
    container = spec["containers"][0]
    assert container["image"] == "ghcr.io/brainseg-tf/brainseg-training:0.1.0"
    assert container["command"] and spec["restartPolicy"] == "Never"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims == {"data": "brainseg-data"} and mounts["data"] == "/data"  # the claim of 00-pvc.yaml (test below)
    scratch = next(v for v in spec["volumes"] if v["name"] == "scratch")
    assert "emptyDir" in scratch and mounts["scratch"] == "/tmp"
    environment = {e["name"]: e.get("value") for e in container["env"]}
    assert environment["BRAINSEG_CACHE_DIR"] == "/data/cache"
    assert all(environment[name].startswith("/tmp") for name in ("HOME", "KERAS_HOME", "MPLCONFIGDIR"))
    assert spec["securityContext"]["runAsNonRoot"] is True and "runAsUser" not in spec["securityContext"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
    if obj["kind"] == "Job":
        assert obj["spec"]["backoffLimit"] >= 1
        assert obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == obj["metadata"]["name"]


def _training_command(obj: dict[str, Any]) -> list[str]:
    command = _pod_spec(obj)["containers"][0]["command"]
    assert command[:3] == [PYTHON, "-m", "training"]
    return command[3:]


def _gpus(obj: dict[str, Any]) -> int | None:
    return _pod_spec(obj)["containers"][0]["resources"].get("limits", {}).get("nvidia.com/gpu")


def _option(command: list[str], flag: str) -> list[str]:
    return [command[i + 1] for i, item in enumerate(command) if item == flag]


@pytest.mark.parametrize(
    ("name", "subcommand", "strategy", "gpus"),
    [
        ("brainseg-prepare-data", "prepare-data", None, None),
        ("brainseg-multiclass-1gpu", "multiclass", "default", 1),
        ("brainseg-multiclass-mirrored", "multiclass", "mirrored", 2),
        ("brainseg-multiclass-nodes", "multiclass", "multiworker", 2),
        ("brainseg-ensemble-bundle", "ensemble", "default", 1),
    ],
)
def test_jobs_run_the_right_command_on_the_right_gpus(name: str, subcommand: str, strategy: str | None, gpus: int | None) -> None:
    job = _find("Job", name)
    command = _training_command(job)
    assert command[0] == subcommand
    assert _option(command, "--set").count(f"training.strategy={strategy}") == (strategy is not None)
    assert _gpus(job) == gpus
    if gpus:
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod_spec(job)["tolerations"]
    if subcommand != "prepare-data":
        assert _option(command, "--run-dir")[0].startswith("/data/runs/")


def test_the_multinode_job_is_indexed_behind_a_headless_service() -> None:
    job = _find("Job", "brainseg-multiclass-nodes")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == render.ClusterParams().workers
    pod = spec["template"]["spec"]
    service = _find("Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] and all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    environment = {e["name"]: e for e in pod["containers"][0]["env"]}
    values = {name: environment[name].get("value") for name in ("BRAINSEG_JOB_NAME", "BRAINSEG_SERVICE", "BRAINSEG_WORKERS", "BRAINSEG_WORKER_PORT")}
    assert values == {"BRAINSEG_JOB_NAME": job["metadata"]["name"], "BRAINSEG_SERVICE": service["metadata"]["name"],
                      "BRAINSEG_WORKERS": str(spec["completions"]), "BRAINSEG_WORKER_PORT": str(service["spec"]["ports"][0]["port"])}
    index_source = environment["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_source == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert pod["containers"][0]["ports"][0]["containerPort"] == service["spec"]["ports"][0]["port"]
    # What each pod then derives: hostnames <job>-<index>.<subdomain>.
    environ = {**values, "JOB_COMPLETION_INDEX": "1"}
    assert json.loads(tf_config_from_environment(environ))["cluster"]["worker"][1] == f"{job['metadata']['name']}-1.{pod['subdomain']}:2222"


def test_each_ensemble_member_is_its_own_job_in_one_run_folder() -> None:
    members = OBJECTS["20-ensemble-members.yaml"]
    assert {job["metadata"]["labels"]["app.kubernetes.io/component"] for job in members} == {"ensemble-member"}  # kubectl wait -l
    bundle_job = _find("Job", "brainseg-ensemble-bundle")
    assert bundle_job["metadata"]["labels"]["app.kubernetes.io/component"] != "ensemble-member"
    commands = [_training_command(job) for job in members]
    assert [_option(c, "--label") for c in commands] == [[name] for name in TISSUE.names[1:]]
    assert {c[0] for c in commands} == {"ensemble"} and all(_gpus(job) == 1 for job in members)
    bundle_command = _training_command(bundle_job)
    assert {_option(c, "--run-dir")[0] for c in [*commands, bundle_command]} == {"/data/runs/ensemble"}
    assert bundle_command[0] == "ensemble" and not _option(bundle_command, "--label")


def test_every_training_command_shares_the_data_arguments_of_prepare_data() -> None:
    """Jobs given other data settings than prepare-data would each build their own cache, at once."""
    extra = list(render.ClusterParams().train_args)
    for where, obj in _workloads():
        command = _pod_spec(obj)["containers"][0]["command"]
        if command[:3] == [PYTHON, "-m", "training"]:
            assert command[-len(extra):] == extra, where


def test_the_claim_is_shared_by_every_node() -> None:
    claim = _find("PersistentVolumeClaim", "brainseg-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--gpus", "0"], "gpus >= 1"), (["--workers", "0"], "workers >= 1"), (["--member", "CSF", "--member", "csf"], "distinct"),
     (["--member", "bundle"], "distinct"), (["--member", "!!"], "member='!!'"), (["--member", "x" * 50], "at most 63"),
     (["--pvc", "Data_1"], "pvc")],
)
def test_renderer_refuses_bad_parameters(argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert render.main([*argv, "--output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_renderer_parameters_reach_the_manifests(tmp_path: Path) -> None:
    argv = ["--registry", "registry.example.org/team/", "--tag", "dev", "--namespace", "seg", "--gpus", "4", "--workers", "3",
            "--member", "gray matter", "--fs-group", "1001", "--storage-class", "cephfs", "--train-args=--config /data/gpu.yaml",
            "--output-dir", str(tmp_path)]
    assert render.main(argv) == 0
    objects = [o for path in sorted(tmp_path.glob("*.yaml")) for o in yaml.safe_load_all(path.read_text())]
    assert all(o["metadata"]["namespace"] == "seg" for o in objects)
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "brainseg-multiclass-nodes")
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3 and _gpus(job) == 4
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.org/team/brainseg-training:dev"
    assert pod["securityContext"]["fsGroup"] == 1001
    assert pod["containers"][0]["command"][-2:] == ["--config", "/data/gpu.yaml"]
    members = [o["metadata"]["name"] for o in objects if o["metadata"]["name"].startswith("brainseg-ensemble-") and o["kind"] == "Job"]
    assert members == ["brainseg-ensemble-gray-matter", "brainseg-ensemble-bundle"]
    assert render.main(argv[:-2] + ["--output-dir", str(tmp_path), "--check"]) == 0
    assert render.main(["--output-dir", str(tmp_path), "--check"]) == 1
