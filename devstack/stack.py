"""``make stack``: the scale-out deployment on this machine, without Docker.

    python -m devstack stack [--dir .stack] [--workers 2]

Starts, on 127.0.0.1 and under one git-ignored folder (default ``<repo>/.stack``, ``IEP_STACK_DIR``):

- **PostgreSQL**, its own cluster (``postgres/``): database ``airflow`` (role ``airflow``: Airflow's
  metadata and Celery's results) and database ``mlflow`` (role ``mlflow``: MLflow's tracking and registry
  store and its users);
- **Redis** with a password: the Celery broker;
- **MLflow** ``mlflow server --serve-artifacts --app-name basic-auth`` on the ``mlflow`` database: clients
  log artifacts through the server (``mlflow-artifacts:`` URIs, stored in ``mlflow/artifacts/``), every
  request needs a login, the pipeline writes with its own account;
- **Airflow 3** with the ``CeleryExecutor``: ``api-server``, ``scheduler``, ``dag-processor``,
  ``triggerer`` and ``AIRFLOW_WORKERS`` (default 2) Celery workers named ``worker-1``, ``worker-2``, ...
  (a task instance's ``hostname`` says which one ran it). The DAGs' folder is the repository's ``dags/``;
  the pipeline's workspace (``IEP_DATA_DIR``: landing folder, warehouse, exports, run folders) is
  ``<dir>/data``, shared by every process on this machine.

Ports, worker count and logins are the variables of ``devstack.env.STACK_SETTINGS`` (the names
``docker-compose.yml`` and ``.env.example`` use). Secrets are generated once into ``<dir>/secrets.env``
(mode 600; a variable set in the environment wins) and are printed only to a terminal, never into a log.

A component that dies is started again (a worker killed with ``kill -9`` comes back under the same
name); Ctrl-C, SIGTERM or SIGHUP stop every process, the databases last, and leave none behind.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.credentials import _write_private, ensure_password, stack_secrets
from devstack.env import HOST, MARKER_ENV, REPO, SETTINGS, airflow_env, airflow_user, tool
from devstack.health import airflow_healthy, port_in_use
from devstack.hostname import WORKER_HOSTNAME_ENV
from devstack.supervisor import (
    Stop,
    Supervisor,
    become_subreaper,
    descendants,
    ignore_stop_signals,
    install_stop_handlers,
    reap_orphans,
    tail,
)

STACK_DIR_ENV = "IEP_STACK_DIR"
#: a component restarted more often than this stops the stack (something is wrong, not a one-off crash)
MAX_RESTARTS = 5
#: stopped before the databases, so that their shutdown can still reach PostgreSQL and Redis
DATABASES = ("postgres", "redis")


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and which ports it binds (from the environment, ``devstack.env.SETTINGS``)."""

    root: Path
    host: str = HOST
    airflow_port: int = int(SETTINGS["AIRFLOW_PORT"].default)
    mlflow_port: int = int(SETTINGS["MLFLOW_PORT"].default)
    postgres_port: int = int(SETTINGS["POSTGRES_PORT"].default)
    redis_port: int = int(SETTINGS["REDIS_PORT"].default)
    workers: int = int(SETTINGS["AIRFLOW_WORKERS"].default)
    concurrency: int = int(SETTINGS["AIRFLOW_WORKER_CONCURRENCY"].default)
    mlflow_admin: str = SETTINGS["MLFLOW_AUTH_ADMIN_USERNAME"].default
    mlflow_user: str = SETTINGS["MLFLOW_TRACKING_USERNAME"].default

    @classmethod
    def from_env(cls, env: dict[str, str], root: Path | None = None, **overrides) -> StackConfig:
        def number(name: str) -> int:
            return int(env.get(name) or SETTINGS[name].default)

        values = dict(root=Path(root or env.get(STACK_DIR_ENV) or REPO / ".stack").resolve(),
                      airflow_port=number("AIRFLOW_PORT"), mlflow_port=number("MLFLOW_PORT"),
                      postgres_port=number("POSTGRES_PORT"), redis_port=number("REDIS_PORT"),
                      workers=number("AIRFLOW_WORKERS"), concurrency=number("AIRFLOW_WORKER_CONCURRENCY"),
                      mlflow_admin=env.get("MLFLOW_AUTH_ADMIN_USERNAME") or SETTINGS["MLFLOW_AUTH_ADMIN_USERNAME"].default,
                      mlflow_user=env.get("MLFLOW_TRACKING_USERNAME") or SETTINGS["MLFLOW_TRACKING_USERNAME"].default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.env"

    @property
    def state_file(self) -> Path:
        """``stack.json``: URLs, ports, users and where the secrets are (no secret), while the stack runs."""
        return self.root / "stack.json"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]


def prepare_root(root: Path) -> None:
    """The stack's folder: searchable but not listable by others (PostgreSQL's OS user must reach its data
    folder), and ignored by git whatever the repository's .gitignore says."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# everything here is generated (python -m devstack stack)\n*\n")


#: the pipeline's location variables: the stack sets its own workspace, whatever the caller (or the Makefile,
#: which exports IEP_DATA_DIR) has set
_WORKSPACE_VARS = ("IEP_DATA_DIR", "IEP_WAREHOUSE", "IEP_EXPORT_DIR", "IEP_ARTIFACT_DIR", "IEP_LANDING_DIR",
                   "IEP_MLFLOW_ARTIFACT_ROOT", STACK_DIR_ENV)


def _base_env(env: dict[str, str]) -> dict[str, str]:
    """What every child keeps of the caller's environment: not the caller's Airflow settings, workspace or
    MLflow location (the stack sets its own), no secret of another deployment; the pipeline's other
    ``IEP_*`` settings (e.g. IEP_HORIZON_HOURS) pass through."""
    drop = ("AIRFLOW__", "MLFLOW_", "AIRFLOW_HOME")
    return {k: v for k, v in env.items()
            if not k.startswith(drop) and k not in SETTINGS and k not in _WORKSPACE_VARS}


def pipeline_env(cfg: StackConfig, secrets: dict[str, str]) -> dict[str, str]:
    """The variables a pipeline process needs to use the stack (its workspace and MLflow with the
    pipeline's account): what the workers get, and what ``python -m ml_tasks`` needs against the stack."""
    return {"IEP_DATA_DIR": str(cfg.data_dir), "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": cfg.mlflow_user, "MLFLOW_TRACKING_PASSWORD": secrets["MLFLOW_TRACKING_PASSWORD"]}


def airflow_stack_env(cfg: StackConfig, secrets: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """The environment of every Airflow process of the stack: CeleryExecutor, PostgreSQL, Redis, the shared
    secrets, the pipeline's workspace and MLflow account. Airflow settings of the caller win where the
    stack has no reason to force them (e.g. AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT)."""
    base = _base_env(env)
    base.update({k: v for k, v in env.items() if k.startswith("AIRFLOW__") and not k.startswith(
        ("AIRFLOW__DATABASE__", "AIRFLOW__CELERY__BROKER", "AIRFLOW__CELERY__RESULT", "AIRFLOW__API",
         "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__FERNET", "AIRFLOW__CORE__SIMPLE_AUTH"))})
    base["AIRFLOW_HOME"] = str(cfg.airflow_home)
    base.setdefault("AIRFLOW__CORE__PARALLELISM", str(max(cfg.workers * cfg.concurrency, 1)))
    base.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    base.setdefault("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", "120")
    full = airflow_env(cfg.host, cfg.airflow_port, base)
    db = f"airflow:{secrets['AIRFLOW_DB_PASSWORD']}@{cfg.host}:{cfg.postgres_port}/airflow"
    full.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",  # the URL forms of docker-compose.yml
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{secrets['REDIS_PASSWORD']}@{cfg.host}:{cfg.redis_port}/0",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(cfg.concurrency),
        "AIRFLOW__CORE__FERNET_KEY": secrets["AIRFLOW_FERNET_KEY"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__API__SECRET_KEY": secrets["AIRFLOW_API_SECRET_KEY"],
        "AIRFLOW_ADMIN_PASSWORD": secrets["AIRFLOW_ADMIN_PASSWORD"],
        # which worker ran a task instance (devstack.hostname); the machine's name elsewhere
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.hostname.hostname",
        **pipeline_env(cfg, secrets),
    })
    return full


def mlflow_stack_env(cfg: StackConfig, secrets: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """The MLflow server's environment: its database, the auth app's administrator and form key; none of
    Airflow's secrets."""
    from devstack.mlflow_auth import write_config

    full = _base_env(env)
    store = f"postgresql://mlflow:{secrets['MLFLOW_DB_PASSWORD']}@{cfg.host}:{cfg.postgres_port}/mlflow"
    full.update({
        "MLFLOW_BACKEND_STORE_URI": store,  # not on the command line, where `ps` would show the password
        "MLFLOW_AUTH_CONFIG_PATH": str(write_config(cfg.root / "mlflow" / "basic_auth.ini", store)),
        "MLFLOW_AUTH_ADMIN_USERNAME": cfg.mlflow_admin,
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets["MLFLOW_AUTH_ADMIN_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    return full


def mlflow_command(cfg: StackConfig) -> list[str]:
    artifacts = cfg.root / "mlflow" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return [tool("mlflow"), "server", "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "2",
            "--serve-artifacts", "--artifacts-destination", str(artifacts), "--app-name", "basic-auth"]


def worker_command(name: str) -> list[str]:
    # --skip-serve-logs: the workers share this machine's log folder, which the api-server reads directly
    return [tool("airflow"), "celery", "worker", "--celery-hostname", name, "--skip-serve-logs"]


def _worker_ready(log: Path, name: str, since: int) -> bool:
    """Celery logs ``celery@<name> ready.`` once the worker consumes (looked for after byte ``since``)."""
    try:
        with log.open("rb") as handle:
            handle.seek(since)
            return f"celery@{name} ready".encode() in handle.read()
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def describe(cfg: StackConfig, env: dict[str, str], secrets: dict[str, str], seconds: float,
             show_secrets: bool) -> str:
    """What ``make stack`` prints once up: URLs and logins (passwords only to a terminal)."""
    af_user = airflow_user(env)
    ml_admin, ml_user = cfg.mlflow_admin, cfg.mlflow_user

    def secret(name: str) -> str:
        return secrets[name] if show_secrets else f"<{name} in {cfg.secrets_file}>"

    return "\n".join([
        f"The stack is up in {seconds:.0f}s (folder {cfg.root}):",
        f"  Airflow  {cfg.airflow_url}   login {af_user} / {secret('AIRFLOW_ADMIN_PASSWORD')}",
        f"  MLflow   {cfg.mlflow_url}   login {ml_admin} / {secret('MLFLOW_AUTH_ADMIN_PASSWORD')} (administrator),"
        f" {ml_user} / {secret('MLFLOW_TRACKING_PASSWORD')} (the pipeline)",
        f"  Celery workers {', '.join(cfg.worker_names())} ({cfg.concurrency} slots each), broker Redis on "
        f"{cfg.host}:{cfg.redis_port}, PostgreSQL on {cfg.host}:{cfg.postgres_port}",
        f"  landing folder {cfg.data_dir / 'landing'}: a new file there flows ingest_events -> build_warehouse"
        f" -> update_interest_model once those DAGs are switched on",
        f"  secrets: {cfg.secrets_file} (mode 600); logs: {cfg.log_dir}",
        "  Ctrl-C stops every process."])


def serve_stack(cfg: StackConfig, timeout: float = 900.0) -> int:
    """Install what is missing, start everything, print the URLs and logins, restart what dies, stop all on
    Ctrl-C/SIGTERM/SIGHUP (the databases last)."""
    from devstack import mlflow_auth
    from devstack.provision import provision
    from devstack.services import Postgres, Redis, install_packages

    env = dict(os.environ)
    env.setdefault(MARKER_ENV, uuid.uuid4().hex)
    busy = [f"{name}={port}" for name, port in (("AIRFLOW_PORT", cfg.airflow_port), ("MLFLOW_PORT", cfg.mlflow_port),
                                                ("POSTGRES_PORT", cfg.postgres_port), ("REDIS_PORT", cfg.redis_port))
            if port_in_use(cfg.host, port)]
    if busy:
        print(f"error: in use on {cfg.host}: {', '.join(busy)} (another stack?); stop it or set those variables",
              file=sys.stderr)
        return 2
    try:
        install_packages()
    except Exception as exc:  # noqa: BLE001 - apt-get's failure is the user's to fix; say which
        print(f"error: installing PostgreSQL/Redis failed ({exc}); run `bash devstack/install_stack.sh`",
              file=sys.stderr)
        return 2
    prepare_root(cfg.root)
    for folder in (cfg.log_dir, cfg.airflow_home, cfg.data_dir / "landing"):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.log_dir, 0o700)
    secrets = stack_secrets(cfg.secrets_file, env)
    cfg.state_file.unlink(missing_ok=True)

    become_subreaper()
    install_stop_handlers()
    sup = Supervisor(_base_env(env), cfg.log_dir)
    started = time.monotonic()
    apps: list[str] = []
    try:
        print(f"Stack folder {cfg.root}", flush=True)
        pg = Postgres(cfg.root / "postgres", cfg.postgres_port, cfg.host)
        if pg.init():
            print("  PostgreSQL cluster created", flush=True)
        sup.start("postgres", pg.command(), user=pg.user, stop_signal=2, whole_group=False)  # SIGINT: fast shutdown
        redis = Redis(cfg.root / "redis", cfg.redis_port, secrets["REDIS_PASSWORD"], cfg.host)
        sup.start("redis", redis.command())
        _wait(sup, lambda: pg.ready() and redis.ready(), started + 120, "PostgreSQL and Redis")
        pg.ensure_database("airflow", "airflow", secrets["AIRFLOW_DB_PASSWORD"])
        pg.ensure_database("mlflow", "mlflow", secrets["MLFLOW_DB_PASSWORD"])
        print(f"  PostgreSQL (databases airflow, mlflow) and Redis up in {time.monotonic() - started:.0f}s",
              flush=True)

        sup.start("mlflow", mlflow_command(cfg), env=mlflow_stack_env(cfg, secrets, env))
        apps.append("mlflow")
        af_env = airflow_stack_env(cfg, secrets, env)
        user, _, password_file = ensure_password(af_env)
        provision(af_env, cfg.log_dir / "setup.log")
        airflow = tool("airflow")
        for name, cmd in (("api-server", [airflow, "api-server", "--host", cfg.host, "--port", str(cfg.airflow_port),
                                          "--workers", "1"]),
                          ("scheduler", [airflow, "scheduler"]), ("dag-processor", [airflow, "dag-processor"]),
                          ("triggerer", [airflow, "triggerer"])):
            sup.start(name, cmd, env=af_env)
            apps.append(name)
        marks = {}
        for name in cfg.worker_names():
            marks[name] = _size(cfg.log_dir / f"{name}.log")
            sup.start(name, worker_command(name), env={**af_env, WORKER_HOSTNAME_ENV: name})
            apps.append(name)
        print(f"  starting {', '.join(apps)} (logs: {cfg.log_dir}) ...", flush=True)
        mlflow_auth.wait_healthy(cfg.mlflow_url, timeout=max(started + timeout - time.monotonic(), 1))
        mlflow_auth.ensure_user(cfg.mlflow_url, (cfg.mlflow_admin, secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]),
                                cfg.mlflow_user, secrets["MLFLOW_TRACKING_PASSWORD"])
        _wait(sup, lambda: airflow_healthy(cfg.airflow_url) and all(
            _worker_ready(cfg.log_dir / f"{n}.log", n, marks[n]) for n in cfg.worker_names()),
            started + timeout, "Airflow and its workers")
        state = {"airflow_url": cfg.airflow_url, "mlflow_url": cfg.mlflow_url, "airflow_user": user,
                 "airflow_password_file": str(password_file), "secrets_file": str(cfg.secrets_file),
                 "mlflow_admin": cfg.mlflow_admin, "mlflow_user": cfg.mlflow_user,
                 "data_dir": str(cfg.data_dir), "airflow_home": str(cfg.airflow_home),
                 "log_dir": str(cfg.log_dir), "workers": cfg.worker_names(), "pid": os.getpid(),
                 "postgres_port": cfg.postgres_port, "redis_port": cfg.redis_port}
        _write_private(cfg.state_file, json.dumps(state, indent=1) + "\n")
        print("\n" + describe(cfg, env, secrets, time.monotonic() - started, sys.stdout.isatty()), flush=True)
        while True:
            for name, code in sup.dead().items():
                spec = sup.specs[name]
                if name in DATABASES or spec.restarts >= MAX_RESTARTS:
                    return sup.report_dead({name: code})
                print(f"{name} exited with status {code}; starting it again "
                      f"(restart {spec.restarts + 1} of at most {MAX_RESTARTS})", flush=True)
                sup.restart(name)
            reap_orphans({p.pid for p in sup.children.values()})
            time.sleep(1)
    except Stop as stop:
        print(f"\n{stop.args[0]}: stopping the stack ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        ignore_stop_signals()
        cfg.state_file.unlink(missing_ok=True)
        sup.stop(grace=45.0, first=[n for n in sup.children if n not in DATABASES])
        print(f"stopped (no process left: {not descendants(os.getpid())})", flush=True)


def _wait(sup: Supervisor, ready, deadline: float, what: str) -> None:
    """Until ``ready()``; a child that dies meanwhile, or the deadline, is a RuntimeError with its log."""
    while not ready():
        if dead := sup.dead():
            name, code = next(iter(dead.items()))
            raise RuntimeError(f"{name} exited with status {code} while waiting for {what}; "
                               f"last lines of its log:\n{tail(sup.log_dir / (name + '.log'), 3000)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in time; see {sup.log_dir}")
        time.sleep(1)
