"""Is it up? Port and HTTP checks, and the health of the Airflow and MLflow servers."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request

from devstack.env import HOST


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_json(url: str, timeout: float = 5.0) -> object | None:
    """The JSON body of a GET, or None when the server does not answer with JSON."""
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local URL)
            return json.loads(resp.read().decode())
    return None


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """True when a GET of ``url`` answers 200."""
    with contextlib.suppress(OSError, urllib.error.URLError):
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local URL)
            return resp.status == 200
    return False


def airflow_healthy(url: str, triggerer: bool = True) -> bool:
    """True when the API server answers and reports the metadata DB and every component healthy."""
    health = http_json(f"{url}/api/v2/monitor/health")
    if not isinstance(health, dict):
        return False
    wanted = ["metadatabase", "scheduler", "dag_processor"] + (["triggerer"] if triggerer else [])
    return all((health.get(name) or {}).get("status") == "healthy" for name in wanted)


def mlflow_healthy(url: str) -> bool:
    return http_ok(f"{url}/health")
