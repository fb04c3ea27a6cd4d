"""Run the real Airflow 3 and MLflow servers on this machine (``make airflow``, ``make mlflow``).

    python scripts/servers.py airflow [--port 8080] [--no-triggerer]
    python scripts/servers.py mlflow  [--port 5000]
    python scripts/servers.py model   [--port 5001] [--alias champion]
    python scripts/servers.py provision          # what airflow-init runs in the compose stack
    python scripts/servers.py compose-env        # .env with generated secrets for docker compose

``airflow`` migrates the metadata DB (SQLite under ``AIRFLOW_HOME``, default ``<repo>/.airflow``),
provisions the pools, variables and connections declared below, writes the DAG folder's dbt manifest
when it is stale, generates the admin password of Airflow's simple auth manager (kept in
``AIRFLOW_HOME``, never in git), then runs ``api-server``, ``scheduler``, ``dag-processor`` and
``triggerer`` as child processes bound to 127.0.0.1 and prints the login once all are healthy.

``mlflow`` runs ``mlflow server`` on 127.0.0.1 over the store the pipeline writes
(``MLFLOW_TRACKING_URI``, default ``sqlite:///<IEP_DATA_DIR>/mlflow/mlflow.db``, artifacts under
``<IEP_DATA_DIR>/mlflow/artifacts``).

``model`` serves the registered model ``user_interest_model@<alias>`` from that store with
``mlflow models serve`` (``--env-manager local``: this environment's packages) on 127.0.0.1:5001:
``POST /invocations`` with a user's recent events returns ranked categories.

Shutdown: Ctrl-C (SIGINT), SIGTERM or SIGHUP stop every process this script started, grandchildren
included. The script makes itself a child subreaper (Linux), so processes orphaned during shutdown
come back to it; it signals each child's process group, waits, then kills whatever descends from it.
``kill -9`` on this script still takes the direct children down with it (``PR_SET_PDEATHSIG``).

The same code serves the browser tests: :func:`start_airflow` and :func:`start_mlflow` run this script
in a new session and return a :class:`Server` (base URL, login, ``stop()``). Standard library only
(``model`` imports mlflow to check the alias before it starts the server).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
AIRFLOW_PORT = 8080
MLFLOW_PORT = 5000
MODEL_PORT = 5001
REGISTERED_MODEL = "user_interest_model"
#: every process started here (and its descendants) carries this variable; see :func:`tagged_processes`
MARKER_ENV = "IEP_SERVER_ID"
PASSWORD_FILE_NAME = "simple_auth_manager_passwords.json.generated"

# What the DAGs need in Airflow's metadata DB, provisioned at every start (idempotent).
#: name -> (slots, description). Every DuckDB writer task runs in ``warehouse_writer`` (single writer).
POOLS: dict[str, tuple[int, str]] = {
    "warehouse_writer": (1, "DuckDB warehouse: one writer at a time"),
}
#: key -> value. The DAGs read paths from IEP_* environment variables, so none are needed today.
VARIABLES: dict[str, str] = {}
#: conn_id -> connection URI. None needed today (DuckDB and MLflow are reached through IEP_*/MLFLOW_*).
CONNECTIONS: dict[str, str] = {}

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# --- environment ----------------------------------------------------------------------------------


def airflow_env(host: str = HOST, port: int = AIRFLOW_PORT, base: dict[str, str] | None = None) -> dict[str, str]:
    """The project's Airflow environment (as in ``scripts/pipeline.py``) plus the servers' settings.

    Values already in the environment win, except the bind address, port and execution API URL,
    which follow ``host`` and ``port``.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
    # LocalExecutor forks `parallelism` workers up front (32 by default, ~130 MB each): a laptop needs few.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    env.setdefault("AIRFLOW__CORE__AUTH_MANAGER",
                   "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{_username(env)}:admin")
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"  # never an open UI
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
                   str(Path(env["AIRFLOW_HOME"]) / PASSWORD_FILE_NAME))
    # Cosmos renders build_warehouse at parse time; a slow 2-core machine needs more than 30 s.
    env.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
    env.setdefault("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", "180")
    env.setdefault("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "60")
    env["AIRFLOW__API__HOST"] = host
    env["AIRFLOW__API__PORT"] = str(port)
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://{host}:{port}/execution/"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("IEP_DATA_DIR", str(REPO / ".data"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))
    return env


def tool(name: str) -> str:
    """A console script of this environment: beside the interpreter, else on PATH (the Airflow image)."""
    beside = BIN / name
    return str(beside) if beside.exists() else (shutil.which(name) or str(beside))


def _username(env: dict[str, str]) -> str:
    return env.get("IEP_AIRFLOW_USER") or "admin"


def mlflow_store(env: dict[str, str] | None = None) -> tuple[str, Path]:
    """(backend store URI, artifact root) the pipeline writes, from ``ml_tasks.config.Paths``."""
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("IEP_DATA_DIR") or REPO / ".data").expanduser().resolve()
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    root = Path(env.get("IEP_MLFLOW_ARTIFACT_ROOT") or data_dir / "mlflow" / "artifacts").expanduser()
    return uri, root.resolve()


# --- credentials ----------------------------------------------------------------------------------


def ensure_password(env: dict[str, str]) -> tuple[str, str, Path]:
    """The admin login of the simple auth manager, kept (mode 600) under AIRFLOW_HOME.

    ``AIRFLOW_ADMIN_PASSWORD`` sets it (the compose stack does); otherwise it is generated once.
    """
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    user = _username(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    passwords: dict[str, str] = {}
    if path.exists() and path.read_text().strip():
        passwords = json.loads(path.read_text())
    wanted = env.get("AIRFLOW_ADMIN_PASSWORD") or passwords.get(user) or secrets.token_urlsafe(15)
    if passwords.get(user) != wanted:
        passwords[user] = wanted
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(passwords) + "\n")
    os.chmod(path, 0o600)
    return user, passwords[user], path


def read_password(env: dict[str, str]) -> tuple[str, str] | None:
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    with contextlib.suppress(OSError, ValueError):
        user = _username(env)
        password = json.loads(path.read_text()).get(user)
        if password:
            return user, password
    return None


# --- processes ------------------------------------------------------------------------------------


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _child_setup() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) for every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            fields_ = stat[stat.rindex(")") + 2:].split()
            table[int(entry.name)] = (int(fields_[1]), fields_[0])
    return table


def descendants(root: int) -> list[int]:
    """Living (not zombie) descendants of ``root``."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return [p for p in out if table.get(p, (0, "Z"))[1] != "Z"]


def tagged_processes(marker: str) -> list[int]:
    """Living processes whose environment has ``IEP_SERVER_ID=<marker>`` (all that a server started)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for pid, (_, state) in _proc_table().items():
        if state == "Z" or pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap_orphans(keep: set[int]) -> None:
    """Collect zombies re-parented to this process (it is a subreaper), except Popen's own children."""
    for pid, (ppid, state) in _proc_table().items():
        if ppid == os.getpid() and state == "Z" and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


class _Stop(Exception):
    pass


@dataclass
class Supervisor:
    """Child processes in their own sessions, all stopped together (used by the CLI)."""

    env: dict[str, str]
    log_dir: Path
    children: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup)
        log.close()
        self.children[name] = proc
        return proc

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.children.items() if p.poll() is not None}

    def stop(self, grace: float = 45.0) -> None:
        """SIGTERM each child's process group, wait ``grace`` s, then kill every remaining descendant."""
        me = os.getpid()
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        keep = {p.pid for p in self.children.values()}
        while time.monotonic() < deadline:
            _reap_orphans(keep)
            if all(p.poll() is not None for p in self.children.values()) and not descendants(me):
                break
            time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = descendants(me)
            if not left:
                break
            _signal_all(left, sig)
            end = time.monotonic() + 10
            while time.monotonic() < end and descendants(me):
                _reap_orphans(keep)
                time.sleep(0.3)
        for proc in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        _reap_orphans(keep)


def _install_stop_handlers() -> None:
    def handler(signum, _frame):
        raise _Stop(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _ignore_stop_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _run_logged(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    start = time.monotonic()
    print(f"  {what} ...", end="", flush=True)
    with log.open("ab") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n".encode())
        handle.flush()
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        print(" failed", flush=True)
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {log}:\n{_tail(log)}")
    print(f" {time.monotonic() - start:.0f}s", flush=True)


def _tail(path: Path, chars: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _http_json(url: str, timeout: float = 5.0) -> object | None:
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local URL)
            return json.loads(resp.read().decode())
    return None


def _http_ok(url: str, timeout: float = 5.0) -> bool:
    with contextlib.suppress(OSError, urllib.error.URLError):
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (local URL)
            return resp.status == 200
    return False


def airflow_healthy(url: str, triggerer: bool = True) -> bool:
    """True when the API server answers and reports the metadata DB and every component healthy."""
    health = _http_json(f"{url}/api/v2/monitor/health")
    if not isinstance(health, dict):
        return False
    wanted = ["metadatabase", "scheduler", "dag_processor"] + (["triggerer"] if triggerer else [])
    return all((health.get(name) or {}).get("status") == "healthy" for name in wanted)


def mlflow_healthy(url: str) -> bool:
    return _http_ok(f"{url}/health")


# --- dbt manifest ---------------------------------------------------------------------------------


def dbt_manifest_stale(project: Path) -> bool:
    manifest = project / "target" / "manifest.json"
    if not (project / "dbt_project.yml").exists():
        return False
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [project / "dbt_project.yml", project / "packages.yml"]
    for sub in ("models", "macros", "tests", "snapshots", "seeds", "analyses"):
        if (project / sub).is_dir():
            sources.extend(p for p in (project / sub).rglob("*") if p.is_file())
    return any(p.exists() and p.stat().st_mtime > built for p in sources)


# --- the CLI commands -----------------------------------------------------------------------------


def _provision(env: dict[str, str], log: Path) -> None:
    airflow = tool("airflow")
    _run_logged([airflow, "db", "migrate"], env, log, "airflow db migrate")
    with tempfile.TemporaryDirectory(prefix="iep-provision-") as tmp:
        if POOLS:
            pools = {name: {"slots": slots, "description": desc, "include_deferred": False}
                     for name, (slots, desc) in POOLS.items()}
            (Path(tmp) / "pools.json").write_text(json.dumps(pools))
            _run_logged([airflow, "pools", "import", f"{tmp}/pools.json"], env, log,
                        f"pools {', '.join(f'{n} ({s} slot)' for n, (s, _) in POOLS.items())}")
        if VARIABLES:
            (Path(tmp) / "variables.json").write_text(json.dumps(VARIABLES))
            _run_logged([airflow, "variables", "import", "--action-on-existing-key", "overwrite",
                         f"{tmp}/variables.json"], env, log, f"variables {', '.join(VARIABLES)}")
        if CONNECTIONS:
            (Path(tmp) / "connections.json").write_text(json.dumps(CONNECTIONS))
            _run_logged([airflow, "connections", "import", "--overwrite", f"{tmp}/connections.json"],
                        env, log, f"connections {', '.join(CONNECTIONS)}")
    project = Path(env.get("IEP_DBT_PROJECT_DIR") or REPO / "dbt_project")
    if dbt_manifest_stale(project):
        try:
            _run_logged([tool("dbt"), "parse", "--quiet", "--project-dir", str(project),
                         "--profiles-dir", str(project)], env, log, "dbt parse (manifest for Cosmos)")
        except RuntimeError as exc:  # the DAG processor then falls back to `dbt ls`; say so, go on
            print(f"  warning: {exc.args[0].splitlines()[0]}", flush=True)


def provision_only() -> int:
    """``servers.py provision``: DB migration, pools/variables/connections and the admin login, no servers.

    The compose stack's ``airflow-init`` runs this, so both deployments provision the same things.
    """
    env = airflow_env(env_host(), int(os.environ.get("AIRFLOW__API__PORT") or AIRFLOW_PORT))
    home = Path(env["AIRFLOW_HOME"])
    log = home / "logs" / "servers" / "setup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        user, _, password_file = ensure_password(env)
        _provision(env, log)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"provisioned; login '{user}' (password in {password_file})")
    return 0


def env_host() -> str:
    return os.environ.get("AIRFLOW__API__HOST") or HOST


# --- compose ----------------------------------------------------------------------------------------

#: variables of .env.example that hold secrets; ``compose-env`` generates a value for each empty one
COMPOSE_SECRETS = ("AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD",
                   "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")


def compose_env_text(template: str, uid: int | None = None) -> str:
    """``.env.example`` with every empty secret filled with a fresh random value (and AIRFLOW_UID set)."""
    import base64

    out = []
    for line in template.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and not line.lstrip().startswith("#"):
            if key in COMPOSE_SECRETS and not value.strip():
                if key == "AIRFLOW_FERNET_KEY":  # what cryptography's Fernet.generate_key() returns
                    value = base64.urlsafe_b64encode(os.urandom(32)).decode()
                else:  # URL-safe: the passwords go into connection URLs unquoted
                    value = secrets.token_urlsafe(24)
            elif key == "AIRFLOW_UID" and uid:  # not 0: containers should not run as root
                value = str(uid)
            line = f"{key}={value}"
        out.append(line)
    return "\n".join(out) + "\n"


def write_compose_env(output: Path, force: bool = False) -> int:
    if output.exists() and not force:
        print(f"error: {output} exists; keep it, or pass --force to replace its secrets", file=sys.stderr)
        return 2
    text = compose_env_text((REPO / ".env.example").read_text(), uid=os.getuid())
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    print(f"wrote {output} (mode 600, git-ignored) with generated secrets; "
          f"the Airflow login is admin / AIRFLOW_ADMIN_PASSWORD from that file")
    return 0


def serve_airflow(host: str, port: int, triggerer: bool = True, timeout: float = 600.0) -> int:
    env = airflow_env(host, port)
    env.setdefault(MARKER_ENV, uuid.uuid4().hex)
    home = Path(env["AIRFLOW_HOME"])
    log_dir = home / "logs" / "servers"
    log_dir.mkdir(parents=True, exist_ok=True)
    if port_in_use(host, port):
        print(f"error: {host}:{port} is already in use (another Airflow?); stop it or pass --port",
              file=sys.stderr)
        return 2
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _install_stop_handlers()
    url = f"http://{host}:{port}"
    sup = Supervisor(env, log_dir)
    started = time.monotonic()
    try:
        print(f"Airflow home {home}, DAGs {env['AIRFLOW__CORE__DAGS_FOLDER']}", flush=True)
        user, password, password_file = ensure_password(env)
        _provision(env, log_dir / "setup.log")
        airflow = tool("airflow")
        sup.start("api-server", [airflow, "api-server", "--host", host, "--port", str(port), "--workers", "1"])
        sup.start("scheduler", [airflow, "scheduler"])
        sup.start("dag-processor", [airflow, "dag-processor"])
        if triggerer:
            sup.start("triggerer", [airflow, "triggerer"])
        print(f"  starting {', '.join(sup.children)} (logs: {log_dir}) ...", flush=True)
        while not airflow_healthy(url, triggerer):
            if dead := sup.dead():
                return _report_dead(sup, dead, log_dir)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"Airflow not healthy after {timeout:.0f}s; see {log_dir}")
            time.sleep(2)
        print(f"\nAirflow is up in {time.monotonic() - started:.0f}s: {url}\n"
              f"  login: {user} / {password}   (generated; kept in {password_file})\n"
              f"  the DAGs start paused: switch them on in the UI (or trigger one by hand).\n"
              f"  Ctrl-C stops the api-server, scheduler, dag-processor"
              f"{' and triggerer' if triggerer else ''}.", flush=True)
        while True:
            if dead := sup.dead():
                return _report_dead(sup, dead, log_dir)
            _reap_orphans({p.pid for p in sup.children.values()})
            time.sleep(1)
    except _Stop as stop:
        print(f"\n{stop.args[0]}: stopping Airflow ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        _ignore_stop_signals()
        sup.stop()
        print(f"stopped (no process left: {not descendants(os.getpid())})", flush=True)


def _report_dead(sup: Supervisor, dead: dict[str, int], log_dir: Path) -> int:
    for name, code in dead.items():
        print(f"error: {name} exited with status {code}; last lines of {log_dir / (name + '.log')}:\n"
              f"{_tail(log_dir / (name + '.log'), 3000)}", file=sys.stderr, flush=True)
    return 1


def serve_mlflow(host: str, port: int, timeout: float = 300.0) -> int:
    env = dict(os.environ)
    env.setdefault(MARKER_ENV, uuid.uuid4().hex)
    # the server's job runner (GenAI scorers, trace archival) is not used here: two fewer processes
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    uri, artifacts = mlflow_store(env)
    if not uri.startswith(("sqlite:", "postgresql", "mysql", "file:")) and "://" in uri:
        print(f"error: MLFLOW_TRACKING_URI={uri} is already a server; open it in the browser instead",
              file=sys.stderr)
        return 2
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    if port_in_use(host, port):
        print(f"error: {host}:{port} is already in use; stop it or pass --port", file=sys.stderr)
        return 2
    log_dir = artifacts.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    return _supervise_one(
        env, log_dir, "mlflow",
        [tool("mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
         "--backend-store-uri", uri, "--default-artifact-root", artifacts.as_uri()],
        healthy=lambda: mlflow_healthy(url), timeout=timeout, what="MLflow",
        starting=f"MLflow store {uri}\n  artifacts {artifacts}",
        ready=lambda secs: (f"MLflow is up in {secs:.0f}s: {url}\n"
                            f"  experiment 'user_interest', registered model 'user_interest_model' (alias 'champion')"),
    )


def _supervise_one(env: dict[str, str], log_dir: Path, name: str, cmd: list[str], healthy: Callable[[], bool],
                   timeout: float, what: str, starting: str, ready: Callable[[float], str]) -> int:
    """Run one server under a :class:`Supervisor` until Ctrl-C/SIGTERM/SIGHUP or until it dies."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _install_stop_handlers()
    sup = Supervisor(env, log_dir)
    started = time.monotonic()
    try:
        sup.start(name, cmd)
        print(f"{starting}\n  starting (log: {log_dir / (name + '.log')}) ...", flush=True)
        while not healthy():
            if dead := sup.dead():
                return _report_dead(sup, dead, log_dir)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{what} not healthy after {timeout:.0f}s; see {log_dir}")
            time.sleep(1)
        print(f"\n{ready(time.monotonic() - started)}\n  Ctrl-C stops it.", flush=True)
        while True:
            if dead := sup.dead():
                return _report_dead(sup, dead, log_dir)
            time.sleep(1)
    except _Stop as stop:
        print(f"\n{stop.args[0]}: stopping {what} ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        _ignore_stop_signals()
        sup.stop(grace=20)
        print(f"stopped (no process left: {not descendants(os.getpid())})", flush=True)


def serve_model(host: str, port: int, alias: str = "champion", timeout: float = 300.0) -> int:
    """``mlflow models serve`` of ``user_interest_model@alias`` over the pipeline's store."""
    env = dict(os.environ)
    env.setdefault(MARKER_ENV, uuid.uuid4().hex)
    uri, _ = mlflow_store(env)
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))  # the scoring server's uvicorn
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        print(f"error: no MLflow store at {uri}; run `make run` first", file=sys.stderr)
        return 2
    if port_in_use(host, port):
        print(f"error: {host}:{port} is already in use; stop it or pass --port", file=sys.stderr)
        return 2
    model_uri = f"models:/{REGISTERED_MODEL}@{alias}"
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        version = mlflow.MlflowClient().get_model_version_by_alias(REGISTERED_MODEL, alias).version
    except Exception as exc:  # noqa: BLE001 - a missing model or alias is the user's situation, not a crash
        print(f"error: {model_uri} not found in {uri} ({str(exc).splitlines()[0][:200]}); "
              f"run `make run` first, or pass --alias", file=sys.stderr)
        return 2
    log_dir = Path(env.get("IEP_DATA_DIR") or REPO / ".data").expanduser().resolve() / "mlflow" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    example = ('{"dataframe_split": {"columns": ["user_id", "category_id", "event_type", "event_ts"], '
               '"data": [["u1", "c001", "view", 1767225600]]}, "params": {"top_n": 5}}')
    return _supervise_one(
        env, log_dir, "model",
        [tool("mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", host, "--port", str(port), "--workers", "1"],
        healthy=lambda: _http_ok(f"{url}/ping"), timeout=timeout, what="the model server",
        starting=f"serving {model_uri} (version {version}) from {uri}",
        ready=lambda secs: (f"Model version {version} is up in {secs:.0f}s: {url}/invocations\n"
                            f"  curl -s {url}/invocations -H 'Content-Type: application/json' -d '{example}'"),
    )


# --- for tests and scripts: start in the background, get a handle -------------------------------


@dataclass
class Server:
    """A running ``servers.py`` supervisor (own session) and what a client needs to use it."""

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
        return _tail(self.log_path, chars)

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
            _signal_all(left, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(name: str, args: list[str], env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    marker = uuid.uuid4().hex
    env = {**env, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), name, *args], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc, marker


def start_airflow(home: Path | None = None, port: int | None = None, host: str = HOST,
                  env: dict[str, str] | None = None, triggerer: bool = True, timeout: float = 600.0,
                  log_path: Path | None = None, wait: bool = True) -> Server:
    """Run ``servers.py airflow`` in its own session; with ``wait``, return once every component is healthy.

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
    """Run ``servers.py mlflow`` in its own session over the store named by ``env``; wait for /health."""
    base = dict(os.environ if env is None else env)
    port = port or free_port(host)
    _, artifacts = mlflow_store(base)
    log_path = log_path or artifacts.parent / "servers-mlflow.log"
    proc, marker = _spawn("mlflow", ["--host", host, "--port", str(port)], base, log_path)
    server = Server("mlflow", f"http://{host}:{port}", proc, log_path, marker, env=base)
    server.ready = lambda: mlflow_healthy(server.url)
    return server.wait_ready(timeout) if wait else server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="server", required=True)
    p = sub.add_parser("airflow", help="api-server + scheduler + dag-processor + triggerer on 127.0.0.1:8080")
    p.add_argument("--host", default=HOST, help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=AIRFLOW_PORT)
    p.add_argument("--no-triggerer", action="store_true", help="no triggerer (no deferrable tasks then)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a healthy start")
    p = sub.add_parser("mlflow", help="mlflow server over the pipeline's store on 127.0.0.1:5000")
    p.add_argument("--host", default=HOST, help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=MLFLOW_PORT)
    p.add_argument("--timeout", type=float, default=300.0)
    p = sub.add_parser("model", help="mlflow models serve of user_interest_model@champion on 127.0.0.1:5001")
    p.add_argument("--host", default=HOST, help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=MODEL_PORT)
    p.add_argument("--alias", default="champion", help="registry alias to serve (default champion)")
    p.add_argument("--timeout", type=float, default=300.0)
    sub.add_parser("provision", help="migrate the Airflow DB, create pools/variables/connections, the login")
    p = sub.add_parser("compose-env", help="write .env for docker compose from .env.example, secrets generated")
    p.add_argument("-o", "--output", type=Path, default=REPO / ".env")
    p.add_argument("--force", action="store_true", help="replace an existing file (new secrets!)")
    args = parser.parse_args(argv)
    if args.server == "compose-env":
        return write_compose_env(args.output, args.force)
    if not Path(tool("airflow")).exists() and args.server in ("airflow", "provision"):
        print(f"error: no airflow beside {sys.executable} or on PATH; run `make install`", file=sys.stderr)
        return 2
    if args.server == "provision":
        return provision_only()
    if args.server == "airflow":
        return serve_airflow(args.host, args.port, triggerer=not args.no_triggerer, timeout=args.timeout)
    if args.server == "model":
        return serve_model(args.host, args.port, alias=args.alias, timeout=args.timeout)
    return serve_mlflow(args.host, args.port, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
