"""MLflow's basic-auth app (``mlflow server --app-name basic-auth``): its configuration and the pipeline's account.

The server creates its administrator (``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``) at
the first start; :func:`ensure_user` then creates the pipeline's account (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``, the variables MLflow's client reads) through the server's REST API, or
resets its password. Every request needs a login; a logged-in user may read (``default_permission``
READ) and owns what it creates (the pipeline: the experiment and the registered model).

Standard library only (``python -m devstack mlflow-auth`` runs in the compose stack's MLflow container).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.credentials import _write_private

DEFAULT_PERMISSION = "READ"


def write_config(path: Path, database_uri: str) -> Path:
    """The auth app's ini file (mode 600: it holds the database password); the admin comes from the
    environment (``MLFLOW_AUTH_ADMIN_*``), not from this file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, "\n".join([
        "[mlflow]",
        f"default_permission = {DEFAULT_PERMISSION}",
        f"database_uri = {database_uri}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access = false",
        # a verified login is remembered for 5 minutes (per server process, keyed by an HMAC of the
        # password): without it every request pays a deliberately slow password hash (~1.7 s on a busy
        # 2-core machine), and logging one model is hundreds of requests. A password changed through the
        # API takes effect at once on the process that handled the change, within 5 minutes on the other.
        "auth_cache_ttl_seconds = 300",
        ""]))
    return path


def _request(url: str, method: str = "GET", login: tuple[str, str] | None = None,
             payload: dict | None = None, timeout: float = 30.0) -> tuple[int, dict | str]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (local URL)
            status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:  # not listening (yet)
        return 0, str(exc)
    try:
        return status, json.loads(body) if body.strip().startswith("{") else body
    except ValueError:
        return status, body


def ensure_user(url: str, admin: tuple[str, str], user: str, password: str) -> str:
    """Create ``user`` (not an administrator) with ``password``, or set the password of the existing one.
    Returns ``created`` or ``updated``; raises RuntimeError when the administrator cannot log in."""
    status, body = _request(f"{url}/api/2.0/mlflow/users/get?username={user}", login=admin)
    if status in (401, 403):
        raise RuntimeError(f"MLflow refused the administrator's login ({status}): {str(body)[:200]}")
    if status == 200:
        status, body = _request(f"{url}/api/2.0/mlflow/users/update-password", "PATCH", admin,
                                {"username": user, "password": password})
        outcome = "updated"
    else:
        status, body = _request(f"{url}/api/2.0/mlflow/users/create", "POST", admin,
                                {"username": user, "password": password})
        outcome = "created"
    if status != 200:
        raise RuntimeError(f"MLflow user {user!r} not {outcome} ({status}): {str(body)[:300]}")
    return outcome


def wait_healthy(url: str, timeout: float = 300.0) -> None:
    """Block until ``/health`` answers 200 (it needs no login)."""
    deadline = time.monotonic() + timeout
    while _request(f"{url}/health", timeout=5)[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"MLflow at {url} not healthy after {timeout:.0f}s")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack mlflow-auth config PATH`` writes the ini from ``MLFLOW_AUTH_DATABASE_URI``;
    ``python -m devstack mlflow-auth user URL`` creates the pipeline's account from the environment."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "config":
        write_config(Path(args[1]), os.environ["MLFLOW_AUTH_DATABASE_URI"])
        print(f"wrote {args[1]} (mode 600)")
        return 0
    if len(args) == 2 and args[0] == "user":
        wait_healthy(args[1])
        admin = (os.environ["MLFLOW_AUTH_ADMIN_USERNAME"], os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"])
        user = os.environ["MLFLOW_TRACKING_USERNAME"]
        outcome = ensure_user(args[1], admin, user, os.environ["MLFLOW_TRACKING_PASSWORD"])
        print(f"MLflow account {user!r} {outcome}")
        return 0
    print("usage: python -m devstack mlflow-auth config PATH | user URL", file=sys.stderr)
    return 2
