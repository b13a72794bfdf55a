#!/usr/bin/env python3
"""Write the Kubernetes / OpenShift manifests that run `python -m training` on GPU nodes.

Needs only Python 3.10+ and PyYAML. With no options it rewrites the committed examples under
``docker/cluster/examples/``; ``--output-dir`` writes elsewhere, ``--check`` only compares.
How to use them: ``docs/cluster.md``.

    python docker/cluster/render.py --registry registry.example.org/brainseg --gpus 4 --workers 3 \\
        --train-args='--config /data/configs/gpu.yaml' --output-dir my-manifests
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parent / "examples"
DEFAULT_REGISTRY = "ghcr.io/brainseg-tf"
DEFAULT_TAG = "0.1.0"  # the project's version (tests/test_cluster.py keeps them equal)
PYTHON = "/opt/brainseg/venv/bin/python"  # the training image's venv (docker/training/Dockerfile)
DATA = "/data"  # where the persistent volume is mounted
CACHE_DIR = f"{DATA}/cache"
RUNS = f"{DATA}/runs"
WORKER_PORT = 2222
RETRIES = 3  # failed pods retried per Job (per worker for the multi-node Job); runs resume from checkpoints
APP_LABELS = {"app.kubernetes.io/name": "brainseg-tf", "app.kubernetes.io/part-of": "brainseg-tf"}
BUNDLE_JOB = "brainseg-ensemble-bundle"
INSTANCE_LABEL = "app.kubernetes.io/instance"  # on every pod, the Job's (or Pod's) name; the headless Service selects on it


@dataclass(frozen=True)
class ClusterParams:
    """What the manifests are rendered from.

    Attributes:
        registry: registry and namespace of the training image, ``<registry>/brainseg-training:<tag>``.
        tag: the image tag.
        namespace: written into every object's metadata; None leaves it to ``kubectl -n`` / ``oc project``.
        pvc: the PersistentVolumeClaim holding the dataset cache and the run folders.
        storage: its size.
        storage_class: its storage class (ReadWriteMany); None takes the cluster's default.
        gpus: GPUs per pod of the one-node multi-GPU and the multi-node Jobs (the others take one).
        workers: pods (nodes) of the multi-node Job.
        members: the ensemble's members, one Job each: the label set's foreground class names.
        fs_group: a fixed ``fsGroup`` for plain Kubernetes; None on OpenShift, which assigns one.
        train_args: arguments appended to every `python -m training` command.
    """

    registry: str = DEFAULT_REGISTRY
    tag: str = DEFAULT_TAG
    namespace: str | None = None
    pvc: str = "brainseg-data"
    storage: str = "50Gi"
    storage_class: str | None = None
    gpus: int = 2
    workers: int = 2
    members: tuple[str, ...] = ("CSF", "gray matter", "white matter")
    fs_group: int | None = None
    train_args: tuple[str, ...] = field(default=("--set", "training.mixed_precision=true"))

    @property
    def image(self) -> str:
        return f"{self.registry.rstrip('/')}/brainseg-training:{self.tag}"


def render(params: ClusterParams) -> dict[str, str]:
    """File name -> YAML text of every manifest."""
    check_params(params)
    files = {
        "00-pvc.yaml": ("The volume every Job mounts at /data: dataset cache (/data/cache) and run folders (/data/runs).\n"
                        "ReadWriteMany, so pods on several nodes can mount it at once.", [persistent_volume_claim(params)]),
        "01-prepare-data.yaml": ("Build the dataset cache once, before any training Job (CPU only).", [prepare_data_job(params)]),
        "10-train-1gpu.yaml": ("The multi-class network on one GPU.", [train_1gpu_job(params)]),
        "11-train-1node-multigpu.yaml": (f"The multi-class network on {params.gpus} GPUs of one node (MirroredStrategy).",
                                         [train_mirrored_job(params)]),
        "12-train-multinode.yaml": (f"The multi-class network on {params.workers} nodes x {params.gpus} GPUs (MultiWorkerMirroredStrategy):\n"
                                    "a headless Service for the workers' DNS names and an Indexed Job; TF_CONFIG is derived in\n"
                                    "each pod from its completion index (training/cluster.py).", train_multinode(params)),
        "20-ensemble-members.yaml": ("The ensemble's members in parallel, one Job per class, all in one ensemble run folder.",
                                     [ensemble_member_job(params, member) for member in params.members]),
        "21-ensemble-bundle.yaml": ("The ensemble bundle, once every member Job has completed (kubectl wait first).",
                                    [ensemble_bundle_job(params)]),
        "30-notebooks.yaml": ("JupyterLab on a GPU node; reach it with kubectl port-forward (docs/cluster.md).", [notebooks_pod(params)]),
        "31-shell.yaml": ("A small pod with the volume mounted, to copy bundles out (kubectl cp) or look around.", [shell_pod(params)]),
    }
    return {name: _document(comment, objects) for name, (comment, objects) in files.items()}


def check_params(params: ClusterParams) -> None:
    """Raise ValueError naming the first parameter the manifests cannot take."""
    if params.gpus < 1 or params.workers < 1:
        raise ValueError(f"Expected gpus >= 1 and workers >= 1. Received: gpus={params.gpus}, workers={params.workers}")
    names = [job_name(member) for member in params.members]
    if not names or len(set(names)) != len(names) or BUNDLE_JOB in names:
        raise ValueError(f"Expected distinct ensemble members. Received: members={list(params.members)}")
    for member, name in zip(params.members, names):
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) or len(name) > 63:
            raise ValueError(f"Expected a member whose Job name {name!r} is a DNS label of at most 63 characters. Received: member={member!r}")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", params.pvc):
        raise ValueError(f"Expected pvc as a Kubernetes name. Received: pvc={params.pvc!r}")


def job_name(member: str) -> str:
    """The Job name of one ensemble member: ``brainseg-ensemble-<class as a DNS label>``."""
    return "brainseg-ensemble-" + re.sub(r"[^a-z0-9]+", "-", member.lower()).strip("-")


def persistent_volume_claim(params: ClusterParams) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": params.storage}}}
    if params.storage_class:
        spec["storageClassName"] = params.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _metadata(params, params.pvc, "storage"), "spec": spec}


def prepare_data_job(params: ClusterParams) -> dict[str, Any]:
    command = _training(params, "prepare-data", "--preview", f"{RUNS}/prepare-data/generator_samples.png")
    return _job(params, "brainseg-prepare-data", "data", _pod_spec(params, command, gpus=0))


def train_1gpu_job(params: ClusterParams) -> dict[str, Any]:
    command = _training(params, "multiclass", "--run-dir", f"{RUNS}/multiclass-1gpu", "--set", "training.strategy=default")
    return _job(params, "brainseg-multiclass-1gpu", "training", _pod_spec(params, command, gpus=1))


def train_mirrored_job(params: ClusterParams) -> dict[str, Any]:
    command = _training(params, "multiclass", "--run-dir", f"{RUNS}/multiclass-mirrored", "--set", "training.strategy=mirrored")
    return _job(params, "brainseg-multiclass-mirrored", "training", _pod_spec(params, command, gpus=params.gpus))


def train_multinode(params: ClusterParams, name: str = "brainseg-multiclass-nodes") -> list[dict[str, Any]]:
    """The headless Service and the Indexed Job of a multi-worker run; both carry `name`."""
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(params, name, "training"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # a worker's name resolves as soon as its pod has an address
            "selector": {INSTANCE_LABEL: name},
            "ports": [{"name": "tf-worker", "port": WORKER_PORT, "targetPort": WORKER_PORT}],
        },
    }
    command = _training(params, "multiclass", "--run-dir", f"{RUNS}/multiclass-nodes", "--set", "training.strategy=multiworker")
    pod = {"subdomain": name, **_pod_spec(params, command, gpus=params.gpus)}  # hostnames <name>-<index>.<name>
    container = pod["containers"][0]
    container["ports"] = [{"name": "tf-worker", "containerPort": WORKER_PORT}]
    container["env"] += [
        {"name": "BRAINSEG_JOB_NAME", "value": name},
        {"name": "BRAINSEG_SERVICE", "value": name},
        {"name": "BRAINSEG_WORKERS", "value": str(params.workers)},
        {"name": "BRAINSEG_WORKER_PORT", "value": str(WORKER_PORT)},
        {"name": "JOB_COMPLETION_INDEX",  # Kubernetes sets it too; spelt out here so the manifest says where it comes from
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
    ]
    job = _job(params, name, "training", pod, retries=RETRIES * params.workers)  # one failed worker fails its peers too
    job["spec"] = {"completionMode": "Indexed", "completions": params.workers, "parallelism": params.workers, **job["spec"]}
    return [service, job]


def ensemble_member_job(params: ClusterParams, member: str) -> dict[str, Any]:
    command = _training(params, "ensemble", "--label", member, "--run-dir", f"{RUNS}/ensemble", "--set", "training.strategy=default")
    return _job(params, job_name(member), "ensemble-member", _pod_spec(params, command, gpus=1))  # kubectl wait -l selects on it


def ensemble_bundle_job(params: ClusterParams) -> dict[str, Any]:
    # Without --label: skips the finished members and writes the bundle (a missing member would train here first).
    command = _training(params, "ensemble", "--run-dir", f"{RUNS}/ensemble", "--set", "training.strategy=default")
    return _job(params, BUNDLE_JOB, "training", _pod_spec(params, command, gpus=1))


def notebooks_pod(params: ClusterParams) -> dict[str, Any]:
    # The notebooks go to the volume on the first start (from the image if it has them), so edits survive the pod.
    script = (
        f"if [ ! -d {DATA}/notebooks ] && [ -d /opt/brainseg/notebooks ]; then cp -R /opt/brainseg/notebooks {DATA}/notebooks; fi; "
        f"mkdir -p {DATA}/notebooks && "
        f"exec /opt/brainseg/venv/bin/jupyter lab --ip 0.0.0.0 --port 8888 --no-browser --ServerApp.root_dir={DATA}/notebooks"
    )
    spec = _pod_spec(params, ["/bin/sh", "-c", script], gpus=1)
    spec["containers"][0]["ports"] = [{"name": "jupyter", "containerPort": 8888}]
    return _pod(params, "brainseg-notebooks", "notebooks", spec)


def shell_pod(params: ClusterParams) -> dict[str, Any]:
    spec = _pod_spec(params, ["/bin/sh", "-c", "exec sleep 86400"], gpus=0, cpu="100m", memory="256Mi")
    return _pod(params, "brainseg-shell", "shell", spec)


def _training(params: ClusterParams, *args: str) -> list[str]:
    return [PYTHON, "-m", "training", *args, *params.train_args]


def _pod_spec(params: ClusterParams, command: list[str], *, gpus: int, cpu: str | None = None, memory: str | None = None) -> dict[str, Any]:
    """One container of the training image, the volume at /data, a writable /tmp, and no privileges (OpenShift's restricted SCC)."""
    cpu = cpu or (str(4 * gpus) if gpus else "2")  # tf.data's augmentation keeps a few cores busy per GPU
    memory = memory or (f"{16 * gpus}Gi" if gpus else "8Gi")
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}
    mounts = [{"name": "data", "mountPath": DATA}, {"name": "scratch", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": params.pvc}},
        {"name": "scratch", "emptyDir": {}},
    ]
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = gpus
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})  # NCCL between GPUs needs more than the default 64 MiB
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}})
    container = {
        "name": "main",
        "image": params.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": _environment(),
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True},
    }
    security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if params.fs_group is not None:
        security["fsGroup"] = params.fs_group
    spec: dict[str, Any] = {"restartPolicy": "Never", "securityContext": security, "containers": [container], "volumes": volumes}
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def _environment() -> list[dict[str, str]]:
    values = {
        "BRAINSEG_CACHE_DIR": CACHE_DIR,
        "HOME": "/tmp",  # OpenShift runs an arbitrary UID with no home folder
        "KERAS_HOME": "/tmp/keras",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "HDF5_USE_FILE_LOCKING": "FALSE",  # caches are written once and renamed; NFS-like volumes often refuse locks
        "PYTHONUNBUFFERED": "1",  # Keras' per-epoch lines reach kubectl logs as they happen
        "PYTHONHASHSEED": "0",
    }
    return [{"name": name, "value": value} for name, value in values.items()]


def _job(params: ClusterParams, name: str, component: str, pod: dict[str, Any], retries: int = RETRIES) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(params, name, component),
        "spec": {
            "backoffLimit": retries,
            # A pod evicted or preempted (node drain, a higher-priority job) is retried without counting as a failure.
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
            "template": {"metadata": {"labels": {**APP_LABELS, "app.kubernetes.io/component": component, INSTANCE_LABEL: name}},
                         "spec": pod},
        },
    }


def _pod(params: ClusterParams, name: str, component: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = _metadata(params, name, component)
    metadata["labels"][INSTANCE_LABEL] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _metadata(params: ClusterParams, name: str, component: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if params.namespace:
        metadata["namespace"] = params.namespace
    metadata["labels"] = {**APP_LABELS, "app.kubernetes.io/component": component}
    return metadata


def _document(comment: str, objects: list[dict[str, Any]]) -> str:
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    header += "# Rendered by docker/cluster/render.py (edit the renderer, not this file); see docs/cluster.md.\n"
    return header + "---\n".join(yaml.safe_dump(o, sort_keys=False, width=200) for o in objects)


def build_parser() -> argparse.ArgumentParser:
    defaults = ClusterParams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=defaults.registry, help="image registry (default: %(default)s)")
    parser.add_argument("--tag", default=defaults.tag, help="image tag (default: %(default)s)")
    parser.add_argument("--namespace", help="namespace written into each object (default: none, use kubectl -n)")
    parser.add_argument("--pvc", default=defaults.pvc, help="PersistentVolumeClaim name (default: %(default)s)")
    parser.add_argument("--storage", default=defaults.storage, help="its size (default: %(default)s)")
    parser.add_argument("--storage-class", help="a ReadWriteMany storage class (default: the cluster's default)")
    parser.add_argument("--gpus", type=int, default=defaults.gpus, help="GPUs per pod of the multi-GPU Jobs (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="nodes of the multi-node Job (default: %(default)s)")
    parser.add_argument("--member", dest="members", action="append", metavar="CLASS",
                        help=f"ensemble member, repeatable (default: {', '.join(defaults.members)})")
    parser.add_argument("--fs-group", type=int, help="fsGroup for plain Kubernetes (default: none; OpenShift assigns it)")
    parser.add_argument("--train-args", type=shlex.split, metavar="'ARGS'",
                        help="arguments appended to every python -m training command, one quoted string "
                             f"given as --train-args='...' (default: '{shlex.join(defaults.train_args)}')")
    parser.add_argument("--output-dir", type=Path, default=EXAMPLES, help="where the files go (default: the committed examples)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files there differ")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = {key: value for key, value in vars(args).items() if key not in ("output_dir", "check") and value is not None}
    for key in ("members", "train_args"):
        if key in options:
            options[key] = tuple(options[key])
    try:
        files = render(ClusterParams(**options))
    except ValueError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 2
    if args.check:
        stale = [name for name, text in files.items() if not (args.output_dir / name).is_file()
                 or (args.output_dir / name).read_text() != text]
        for name in stale:
            print(f"{args.output_dir / name}: differs from what render.py writes", file=sys.stderr)
        return 1 if stale else 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.output_dir / name).write_text(text)
        print(args.output_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
