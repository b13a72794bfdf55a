"""Register the ChRIS plugins in a ChRIS instance through its backend's admin API.

Each descriptor (by default both committed ones) is checked against ChRIS's registration rules, then
posted to ``<CHRIS_URL>/chris-admin/api/v1/`` as a multipart form: the descriptor file as ``fname``
and the comma-separated compute resources as ``compute_names``, with HTTP basic auth of an admin.
Settings come from the environment:

    CHRIS_URL             the backend (CUBE), e.g. http://localhost:8000 (a trailing /api/v1/ is dropped)
    CHRIS_ADMIN_USER      an admin (staff) user of that backend
    CHRIS_ADMIN_PASSWORD  its password
    CHRIS_COMPUTE_NAMES   compute resources to register the plugins with (default: host)

Stops at the first failure with one line on stderr (unreachable server, bad credentials, a descriptor
the backend or the local rules refuse) and exit status 1; 2 for missing settings. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `python docker/register.py`

from chris_plugins.descriptors import PLUGINS, registration_problems  # noqa: E402

ADMIN_API = "/chris-admin/api/v1/"
DEFAULT_COMPUTE_NAMES = "host"


class RegistrationError(Exception):
    """Registration cannot go on; the message is one line for the user."""


class SettingsError(RegistrationError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """Where and as whom to register."""

    endpoint: str
    user: str
    password: str
    compute_names: str

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> Settings:
        missing = [k for k in ("CHRIS_URL", "CHRIS_ADMIN_USER", "CHRIS_ADMIN_PASSWORD") if not environ.get(k)]
        if missing:
            raise SettingsError(f"set {', '.join(missing)} (see python docker/register.py --help)")
        url = environ["CHRIS_URL"].strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"CHRIS_URL: expected an http:// or https:// URL. Received: {url!r}")
        url = url.removesuffix("/api/v1")
        names = [n.strip() for n in environ.get("CHRIS_COMPUTE_NAMES", DEFAULT_COMPUTE_NAMES).split(",") if n.strip()]
        if not names:
            raise SettingsError("CHRIS_COMPUTE_NAMES: expected at least one compute resource name")
        return cls(url + ADMIN_API, environ["CHRIS_ADMIN_USER"], environ["CHRIS_ADMIN_PASSWORD"], ",".join(names))


def read_descriptor(path: Path) -> bytes:
    """The descriptor file's bytes, after checking them against ChRIS's registration rules."""
    try:
        content = path.read_bytes()
        descriptor = json.loads(content)
    except OSError as error:
        raise RegistrationError(f"{path}: cannot read it ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RegistrationError(f"{path}: not a JSON descriptor ({error})") from None
    if not isinstance(descriptor, dict):
        raise RegistrationError(f"{path}: expected a JSON object. Received: {type(descriptor).__name__}")
    problems = registration_problems(descriptor)
    if problems:
        raise RegistrationError(f"{path}: ChRIS would refuse it: {'; '.join(problems)}")
    return content


def multipart_form(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, from text fields and (filename, bytes, type) files."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n")
    for name, (filename, content, content_type) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def register(path: Path, settings: Settings, timeout: float) -> dict[str, Any]:
    """Post one descriptor; the created plugin as the backend describes it.

    Raises:
        RegistrationError: refused locally or by the backend, bad credentials, or no answer.
    """
    body, content_type = multipart_form({"compute_names": settings.compute_names}, {"fname": (path.name, read_descriptor(path), "application/json")})
    token = base64.b64encode(f"{settings.user}:{settings.password}".encode()).decode()
    request = urllib.request.Request(settings.endpoint, data=body, method="POST", headers={
        "Content-Type": content_type, "Accept": "application/json", "Authorization": f"Basic {token}"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return _json_or_empty(response.read())
    except urllib.error.HTTPError as error:
        raise _http_error(path, settings, error) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise RegistrationError(f"cannot reach ChRIS at {settings.endpoint}: {reason}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET of the plugin list: report it instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, D102
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _http_error(path: Path, settings: Settings, error: urllib.error.HTTPError) -> RegistrationError:
    if 300 <= error.code < 400:
        where = error.headers.get("Location", "elsewhere")
        return RegistrationError(f"{settings.endpoint} redirects to {where} (HTTP {error.code}): set CHRIS_URL to the backend's own address")
    detail = server_message(error.read())
    if error.code in (401, 403):
        return RegistrationError(f"{settings.endpoint} refused the credentials of CHRIS_ADMIN_USER={settings.user!r} (HTTP {error.code}: {detail})")
    if error.code == 400:
        return RegistrationError(f"{path}: rejected by {settings.endpoint}: {detail}")
    return RegistrationError(f"{path}: {settings.endpoint} answered HTTP {error.code} {error.reason}: {detail}")


def server_message(body: bytes) -> str:
    """The backend's error message on one line: DRF's JSON ({field: [messages]}, {detail}), collection+json, or text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return " ".join(text.split())[:300] or "no message"
    if isinstance(payload, dict) and isinstance(payload.get("collection"), dict):
        payload = payload["collection"].get("error", payload)
    return " ".join(_flatten(payload).split())[:500] or "no message"


def _flatten(value: Any, key: str = "") -> str:
    if isinstance(value, dict):
        return "; ".join(_flatten(v, "" if k in ("detail", "message", "non_field_errors") else k) for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_flatten(v, key) for v in value)
    return f"{key}: {value}" if key else str(value)


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Register each descriptor in turn; 0 when all were registered."""
    parser = argparse.ArgumentParser(prog="python docker/register.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("descriptors", nargs="*", type=Path, default=[p.descriptor for p in PLUGINS],
                        help="descriptor files (default: the committed ones of every plugin)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the backend (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_environment(dict(os.environ if environ is None else environ))
        for path in args.descriptors:
            created = register(path, settings, args.timeout)
            print(f"registered {created.get('name', path.stem)} {created.get('version', '')} (id {created.get('id', '?')}) "
                  f"at {settings.endpoint} with compute resources {settings.compute_names}")
    except RegistrationError as error:
        print(f"register.py: {error}", file=sys.stderr)
        return 2 if isinstance(error, SettingsError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
