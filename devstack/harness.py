"""For tests and scripts: run a server in the background, get a handle.

:func:`start_airflow` and :func:`start_mlflow` run ``python -m devstack airflow|mlflow`` in a new
session and return a :class:`Server` (base URL, login, ``stop()``); :func:`start_stack` runs
``python -m devstack stack`` and returns a :class:`StackServer` (both URLs, the logins, the environment
a pipeline process needs to use the stack)::

    from devstack import harness
    af = harness.start_airflow(home=tmp / "airflow", env=env)   # free port, waits until healthy
    ml = harness.start_mlflow(env=env)
    af.stop(); ml.stop()                                        # SIGINT, then nothing may be left
    assert not af.leftovers()
    st = harness.start_stack(tmp / "stack", env=env)            # free ports, waits for every component
    st.stop(); assert not st.leftovers()
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

from devstack.credentials import read_env_file, read_password
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
    #: what :meth:`stop` found still alive once the server had exited (and then killed): empty when the
    #: server stopped everything it started by itself
    left_behind: list[int] = field(default_factory=list)
    _tree: dict[int, str] = field(default_factory=dict, repr=False)

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
        """Processes that this server started and that are still alive (empty once stopped): those carrying
        its marker, and those that were below it when :meth:`stop` began (a process that rewrites its
        title, as Celery, Redis and PostgreSQL do, may no longer show its environment)."""
        alive = {pid for pid, started in self._tree.items() if _started(pid) == started}
        return sorted(alive | set(tagged_processes(self.marker)))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120.0) -> int | None:
        """Stop like Ctrl-C would (``sig``), then make sure nothing it started survives; what had to be
        killed after the server exited is in :attr:`left_behind`."""
        if self.process.poll() is None:
            self._tree = {pid: _started(pid) for pid in descendants(self.process.pid)}
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self.left_behind = self.leftovers()
        if self.process.poll() is None or self.left_behind:
            left = set(descendants(self.process.pid)) | set(self.left_behind)
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


def _started(pid: int) -> str:
    """A process's start time (field 22 of /proc/PID/stat), '' when it is gone or a zombie: with the pid,
    it names one process even after pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields_ = stat[stat.rindex(")") + 2:].split()
    return "" if fields_[0] == "Z" else fields_[19]


def _spawn(name: str, args: list[str], env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python -m devstack <name> <args>`` in a new session, tagged with a fresh marker."""
    marker = uuid.uuid4().hex
    env = {**env, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # a server's output: owner only
    with os.fdopen(fd, "ab") as log:
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


@dataclass
class StackServer(Server):
    """A running ``devstack stack``: ``url`` is Airflow's; the rest comes from its ``stack.json`` and its
    mode-600 secrets file."""

    root: Path = field(default=Path("."), repr=False)

    @property
    def state(self) -> dict:
        import json

        return json.loads((self.root / "stack.json").read_text())

    @property
    def secrets(self) -> dict[str, str]:
        return read_env_file(self.root / "secrets.env")

    @property
    def mlflow_url(self) -> str:
        return self.state["mlflow_url"]

    def mlflow_login(self, admin: bool = False) -> tuple[str, str]:
        """The pipeline's MLflow account, or the administrator's."""
        if admin:
            return self.state["mlflow_admin"], self.secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]
        return self.state["mlflow_user"], self.secrets["MLFLOW_TRACKING_PASSWORD"]

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with what a pipeline process needs to work on the
        stack: its workspace and its MLflow server with the pipeline's account."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith(("IEP_DATA_DIR", "IEP_WAREHOUSE", "IEP_EXPORT_DIR", "IEP_ARTIFACT_DIR",
                                    "IEP_LANDING_DIR", "IEP_MLFLOW_ARTIFACT_ROOT", "MLFLOW_"))}
        user, password = self.mlflow_login()
        env.update({"IEP_DATA_DIR": self.state["data_dir"], "MLFLOW_TRACKING_URI": self.mlflow_url,
                    "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})
        return env


def start_stack(root: Path, env: dict[str, str] | None = None, workers: int | None = None,
                timeout: float = 900.0, log_path: Path | None = None, wait: bool = True,
                free_ports: bool = True) -> StackServer:
    """Run ``devstack stack --dir root`` in its own session (free ports unless ``free_ports`` is False);
    with ``wait``, return once PostgreSQL, Redis, MLflow, every Airflow component and every worker is up."""
    from devstack.stack import StackConfig

    base = dict(os.environ if env is None else env)
    if free_ports:
        for name in ("AIRFLOW_PORT", "MLFLOW_PORT", "POSTGRES_PORT", "REDIS_PORT"):
            base[name] = str(free_port(HOST))
    cfg = StackConfig.from_env(base, root=root, workers=workers)
    log_path = log_path or cfg.root.parent / f"{cfg.root.name}-stack.log"
    args = ["--dir", str(cfg.root), "--timeout", str(int(timeout))]
    if workers is not None:
        args += ["--workers", str(workers)]
    proc, marker = _spawn("stack", args, base, log_path)
    server = StackServer("stack", cfg.airflow_url, proc, log_path, marker, env=base, root=cfg.root)

    def ready() -> bool:
        if not (cfg.root / "stack.json").exists() or "The stack is up" not in server.log_tail(6000):
            return False
        server.username, server.password = read_password(
            {"IEP_AIRFLOW_USER": base.get("IEP_AIRFLOW_USER", ""),
             "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": server.state["airflow_password_file"]}) \
            or (None, None)
        return server.username is not None

    server.ready = ready
    return server.wait_ready(timeout) if wait else server
