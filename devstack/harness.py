"""For tests and scripts: run a server in the background, get a handle.

:func:`start_airflow` and :func:`start_mlflow` run ``python -m devstack airflow|mlflow`` in a new
session and return a :class:`Server` (base URL, login, ``stop()``)::

    from devstack import harness
    af = harness.start_airflow(home=tmp / "airflow", env=env)   # free port, waits until healthy
    ml = harness.start_mlflow(env=env)
    af.stop(); ml.stop()                                        # SIGINT, then nothing may be left
    assert not af.leftovers()
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.credentials import read_password
from devstack.env import HOST, MARKER_ENV, REPO, airflow_env, mlflow_store
from devstack.health import airflow_healthy, free_port, mlflow_healthy
from devstack.supervisor import descendants, signal_all, tagged_processes, tail


@dataclass
class Server:
    """A running ``devstack`` supervisor (own session) and what a client needs to use it."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: Path
    marker: str
    username: str | None = None
    password: str | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    ready: Callable[[], bool] = field(default=lambda: True, repr=False)

    def wait_ready(self, timeout: float = 600.0) -> Server:
        """Block until the server is healthy; on failure stop it and raise with the log's tail."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} server exited with status {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} server not healthy after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(2)
        if self.name == "airflow" and self.username is None:
            self.username, self.password = read_password(self.env)  # type: ignore[misc]
        return self

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return tail(self.log_path, chars)

    def leftovers(self) -> list[int]:
        """Processes that this server started and that are still alive (empty once stopped)."""
        return tagged_processes(self.marker)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120.0) -> int | None:
        """Stop like Ctrl-C would (``sig``), then make sure nothing it started survives."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        if self.process.poll() is None or self.leftovers():
            left = set(descendants(self.process.pid)) | set(self.leftovers())
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            signal_all(left, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(name: str, args: list[str], env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python -m devstack <name> <args>`` in a new session, tagged with a fresh marker."""
    marker = uuid.uuid4().hex
    env = {**env, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devstack", name, *args], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc, marker


def start_airflow(home: Path | None = None, port: int | None = None, host: str = HOST,
                  env: dict[str, str] | None = None, triggerer: bool = True, timeout: float = 600.0,
                  log_path: Path | None = None, wait: bool = True) -> Server:
    """Run ``devstack airflow`` in its own session; with ``wait``, return once every component is healthy.

    ``env`` (default: this process's environment) is where IEP_* paths and Airflow settings go; ``home``
    overrides AIRFLOW_HOME. The handle carries the URL and the generated admin login.
    """
    base = dict(os.environ if env is None else env)
    if home is not None:
        base["AIRFLOW_HOME"] = str(home)
        for key in ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
            base.pop(key, None)
    port = port or free_port(host)
    full = airflow_env(host, port, base)
    log_path = log_path or Path(full["AIRFLOW_HOME"]) / "servers-airflow.log"
    args = ["--host", host, "--port", str(port), "--timeout", str(int(timeout))]
    proc, marker = _spawn("airflow", args + ([] if triggerer else ["--no-triggerer"]), base, log_path)
    server = Server("airflow", f"http://{host}:{port}", proc, log_path, marker, env=full)
    server.ready = lambda: ("Airflow is up" in server.log_tail(3000) and airflow_healthy(server.url, triggerer)
                            and read_password(full) is not None)
    return server.wait_ready(timeout) if wait else server


def start_mlflow(port: int | None = None, host: str = HOST, env: dict[str, str] | None = None,
                 timeout: float = 300.0, log_path: Path | None = None, wait: bool = True) -> Server:
    """Run ``devstack mlflow`` in its own session over the store named by ``env``; wait for /health."""
    base = dict(os.environ if env is None else env)
    port = port or free_port(host)
    _, artifacts = mlflow_store(base)
    log_path = log_path or artifacts.parent / "servers-mlflow.log"
    proc, marker = _spawn("mlflow", ["--host", host, "--port", str(port)], base, log_path)
    server = Server("mlflow", f"http://{host}:{port}", proc, log_path, marker, env=base)
    server.ready = lambda: mlflow_healthy(server.url)
    return server.wait_ready(timeout) if wait else server
