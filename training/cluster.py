"""TF_CONFIG for a multi-worker run as a Kubernetes Indexed Job, derived from the pods' stable DNS names.

Kubernetes gives each pod of an Indexed Job (``completionMode: Indexed``) the hostname
``<job>-<index>`` and the variable ``JOB_COMPLETION_INDEX``. With the pod template's ``subdomain`` set
to a headless Service's name, the pods resolve one another as ``<job>-<index>.<service>`` within the
namespace. So the whole ``MultiWorkerMirroredStrategy`` cluster follows from four values the Job's
manifest sets (``docker/cluster/render.py`` writes them) and the index Kubernetes adds:

==========================  ==============================================  ========
variable                    meaning                                         default
==========================  ==============================================  ========
``BRAINSEG_JOB_NAME``       the Job's ``metadata.name``                     required
``BRAINSEG_SERVICE``        the headless Service named by ``subdomain``     required
``BRAINSEG_WORKERS``        ``completions`` (= ``parallelism``)             required
``BRAINSEG_WORKER_PORT``    the port every worker's gRPC server listens on  2222
``JOB_COMPLETION_INDEX``    this pod's index, set by Kubernetes             required
==========================  ==============================================  ========

Worker 0 is the chief (the cluster has no ``chief`` task), so it alone writes results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from brainseg_tf.errors import ConfigError

JOB_VARIABLE = "BRAINSEG_JOB_NAME"
SERVICE_VARIABLE = "BRAINSEG_SERVICE"
WORKERS_VARIABLE = "BRAINSEG_WORKERS"
PORT_VARIABLE = "BRAINSEG_WORKER_PORT"
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
DEFAULT_PORT = 2222

# Which names an error message uses for each value: the function's parameters, or the environment's variables.
_PARAMETERS = {"job": "job", "service": "service", "workers": "workers", "index": "index", "port": "port"}
_VARIABLES = {"job": JOB_VARIABLE, "service": SERVICE_VARIABLE, "workers": WORKERS_VARIABLE, "index": INDEX_VARIABLE, "port": PORT_VARIABLE}
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")  # RFC 1123 label: a pod hostname <job>-<index>
_SERVICE_LABEL = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")  # RFC 1035 label: a Service name
_MAX_LABEL = 63


def worker_addresses(job: str, service: str, workers: int, port: int = DEFAULT_PORT) -> list[str]:
    """``<job>-<i>.<service>:<port>`` for i in 0..workers-1: the workers' addresses, in task-index order.

    Raises:
        ConfigError: a name that is not a DNS label, a worker count below 1 or a port outside 1..65535.
    """
    return _addresses(job, service, workers, port, _PARAMETERS)


def tf_config_for_index(job: str, service: str, workers: int, index: int, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The TF_CONFIG of worker `index` of an Indexed Job (as a dict; ``json.dumps`` it for the variable).

    Args:
        job: the Job's name; its pods' hostnames are ``<job>-<index>``.
        service: the headless Service named by the pod template's ``subdomain``.
        workers: the Job's ``completions`` (= ``parallelism``), at least 1.
        index: this pod's completion index, 0..workers-1.
        port: the port each worker listens on.

    Returns:
        ``{"cluster": {"worker": [addresses]}, "task": {"type": "worker", "index": index}}``.

    Raises:
        ConfigError: a bad value, named in the message.
    """
    return _tf_config(job, service, workers, index, port, _PARAMETERS)


def tf_config_from_environment(environ: Mapping[str, str]) -> str | None:
    """TF_CONFIG (JSON text) from an Indexed Job's environment; None outside one.

    "Outside one" means none of ``BRAINSEG_JOB_NAME``, ``BRAINSEG_SERVICE`` and ``BRAINSEG_WORKERS``
    is set. Once any is, the others and ``JOB_COMPLETION_INDEX`` must be set and valid.

    Raises:
        ConfigError: a missing or bad variable, named in the message.
    """
    required = (JOB_VARIABLE, SERVICE_VARIABLE, WORKERS_VARIABLE)
    if not any(environ.get(name, "").strip() for name in required):
        return None
    given = ", ".join(name for name in required if environ.get(name, "").strip())
    for name in (*required, INDEX_VARIABLE):
        if not environ.get(name, "").strip():
            hint = "; Kubernetes sets it in a Job with completionMode: Indexed" if name == INDEX_VARIABLE else ""
            raise ConfigError(f"{name} is not set, but a multi-worker Indexed Job needs it with {given}{hint}")
    spec = _tf_config(
        environ[JOB_VARIABLE].strip(), environ[SERVICE_VARIABLE].strip(),
        _integer(environ, WORKERS_VARIABLE), _integer(environ, INDEX_VARIABLE),
        _integer(environ, PORT_VARIABLE) if environ.get(PORT_VARIABLE, "").strip() else DEFAULT_PORT,
        _VARIABLES,
    )
    return json.dumps(spec)


def _tf_config(job: str, service: str, workers: int, index: int, port: int, names: dict[str, str]) -> dict[str, Any]:
    addresses = _addresses(job, service, workers, port, names)
    if not _is_int(index) or not 0 <= index < workers:
        raise ConfigError(f"Expected {names['index']} in 0..{workers - 1} ({names['workers']}={workers}). Received: {names['index']}={index!r}")
    return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}


def _addresses(job: str, service: str, workers: int, port: int, names: dict[str, str]) -> list[str]:
    if not _is_int(workers) or workers < 1:
        raise ConfigError(f"Expected {names['workers']} >= 1. Received: {names['workers']}={workers!r}")
    if not _is_int(port) or not 1 <= port <= 65535:
        raise ConfigError(f"Expected {names['port']} in 1..65535. Received: {names['port']}={port!r}")
    _check_label(service, names["service"], _SERVICE_LABEL, _MAX_LABEL)
    _check_label(job, names["job"], _HOST_LABEL, _MAX_LABEL - len(f"-{workers - 1}"))  # so that every <job>-<index> fits a label
    return [f"{job}-{index}.{service}:{port}" for index in range(workers)]


def _check_label(value: str, name: str, pattern: re.Pattern[str], max_length: int) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > max_length:
        raise ConfigError(
            f"Expected {name} as a DNS label (lower-case letters, digits and '-', at most {max_length} characters). Received: {name}={value!r}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(environ: Mapping[str, str], name: str) -> int:
    text = environ[name].strip()
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"Expected {name} as a whole number. Received: {name}={text!r}") from None
