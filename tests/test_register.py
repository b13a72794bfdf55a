"""docker/register.py against a stand-in ChRIS backend on 127.0.0.1 that checks the admin API's form."""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chris_plugins.descriptors import PLUGINS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docker" / "register.py"
USER, PASSWORD = "chris", "chris1234"
ALREADY = "Plugin with name pl-brainseg-multiclass and version 0.1.0 already exists."


@dataclass
class Backend:
    """What the stand-in backend saw, and which plugins it refuses."""

    url: str
    requests: list[dict] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    redirect_to: str | None = None


def _parse_form(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {name: (filename, bytes)}, with the standard library's MIME parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert message.is_multipart(), content_type
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


def _handler(backend: Backend) -> type[BaseHTTPRequestHandler]:
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest's output clean
            pass

        def _answer(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen = {"path": self.path, "auth": self.headers.get("Authorization"), "accept": self.headers.get("Accept")}
            backend.requests.append(seen)
            if backend.redirect_to:
                self.send_response(301)
                self.send_header("Location", backend.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if self.path != "/chris-admin/api/v1/":
                return self._answer(404, {"detail": "Not found."})
            if seen["auth"] != expected_auth:
                return self._answer(401, {"detail": "Invalid username/password."})
            form = _parse_form(self.headers["Content-Type"], body)
            seen["form"] = form
            if set(form) != {"fname", "compute_names"} or form["fname"][0] is None:
                return self._answer(400, {"fname": ["At least one of the fields 'fname' or 'plugin_store_url' must be provided."]})
            descriptor = json.loads(form["fname"][1])
            if descriptor["name"] in backend.refuse:
                return self._answer(400, {"non_field_errors": [ALREADY]})
            created = {"id": 7, "name": descriptor["name"], "version": descriptor["version"], "dock_image": descriptor["dock_image"]}
            return self._answer(201, created)

    return Handler


@pytest.fixture
def backend():
    backend = Backend(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(backend))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    backend.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield backend
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _register(url: str, *args: str, user: str = USER, password: str = PASSWORD, compute: str | None = "host, galena") -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ.get("PATH", ""), "CHRIS_URL": url, "CHRIS_ADMIN_USER": user, "CHRIS_ADMIN_PASSWORD": password}
    if compute is not None:
        environment["CHRIS_COMPUTE_NAMES"] = compute
    return subprocess.run([sys.executable, str(SCRIPT), "--timeout", "10", *args], capture_output=True, text=True,
                          env=environment, timeout=60, check=False)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("register.py: "), done.stderr
    return lines[0]


def test_registers_every_committed_descriptor_as_the_admin_api_expects(backend: Backend) -> None:
    done = _register(backend.url)
    assert done.returncode == 0, done.stderr
    assert len(backend.requests) == len(PLUGINS)
    for plugin, seen in zip(PLUGINS, backend.requests):
        filename, content = seen["form"]["fname"]
        assert filename == plugin.descriptor.name
        assert content == plugin.descriptor.read_bytes()  # the file itself, byte for byte
        assert seen["form"]["compute_names"] == (None, b"host,galena")
        assert seen["accept"] == "application/json"
        assert f"registered {plugin.name} 0.1.0 (id 7)" in done.stdout


def test_compute_names_default_to_host_and_an_api_v1_url_is_accepted(backend: Backend) -> None:
    done = _register(backend.url + "/api/v1/", str(PLUGINS[0].descriptor), compute=None)
    assert done.returncode == 0, done.stderr
    assert backend.requests[0]["path"] == "/chris-admin/api/v1/"
    assert backend.requests[0]["form"]["compute_names"] == (None, b"host")


def test_bad_credentials_are_one_line_naming_the_user(backend: Backend) -> None:
    done = _register(backend.url, password="wrong")
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "credentials" in line and "'chris'" in line and "HTTP 401" in line and "Invalid username/password." in line
    assert len(backend.requests) == 1  # stops at the first failure


def test_a_rejected_descriptor_surfaces_the_backends_message(backend: Backend) -> None:
    backend.refuse.add("pl-brainseg-multiclass")
    done = _register(backend.url)
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "pl-brainseg-multiclass.json: rejected by" in line and ALREADY in line
    assert len(backend.requests) == 1


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _register(f"http://127.0.0.1:{port}")
    assert done.returncode == 1
    line = _one_error_line(done)
    assert f"cannot reach ChRIS at http://127.0.0.1:{port}/chris-admin/api/v1/" in line


def test_a_redirect_is_reported_not_followed(backend: Backend) -> None:
    backend.redirect_to = "https://cube.example.org/chris-admin/api/v1/"
    done = _register(backend.url)
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "redirects to https://cube.example.org/chris-admin/api/v1/ (HTTP 301)" in line
    assert len(backend.requests) == 1  # the POST was not replayed as a GET


def test_a_descriptor_chris_would_refuse_is_never_posted(backend: Backend, tmp_path: Path) -> None:
    descriptor = copy.deepcopy(json.loads(PLUGINS[0].descriptor.read_text()))
    descriptor["min_memory_limit"] = "2GB"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(descriptor))
    done = _register(backend.url, str(broken))
    assert done.returncode == 1
    assert "broken.json: ChRIS would refuse it: min_memory_limit" in _one_error_line(done)
    assert backend.requests == []


@pytest.mark.parametrize(("environment", "phrase"), [
    ({"CHRIS_URL": ""}, "set CHRIS_URL"),
    ({"CHRIS_ADMIN_PASSWORD": ""}, "set CHRIS_ADMIN_PASSWORD"),
    ({"CHRIS_URL": "localhost:8000"}, "expected an http:// or https:// URL"),
    ({"CHRIS_COMPUTE_NAMES": " , "}, "CHRIS_COMPUTE_NAMES"),
], ids=["no url", "no password", "url without scheme", "no compute names"])
def test_missing_or_malformed_settings_exit_2(environment: dict[str, str], phrase: str) -> None:
    settings = {"CHRIS_URL": "http://127.0.0.1:9", "CHRIS_ADMIN_USER": USER, "CHRIS_ADMIN_PASSWORD": PASSWORD, **environment}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ.get("PATH", ""), **settings})
    assert done.returncode == 2
    assert phrase in _one_error_line(done)
