"""The servers' environment: host, ports, the Airflow settings and the pipeline's MLflow store.

Paths and URIs of the pipeline come from ``ml_tasks.config.Paths`` (imported when first needed, so that
``compose-env`` stays standard library only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
AIRFLOW_PORT = 8080
MLFLOW_PORT = 5000
MODEL_PORT = 5001
#: every process started here (and its descendants) carries this variable; see
#: :func:`devstack.supervisor.tagged_processes`
MARKER_ENV = "IEP_SERVER_ID"
PASSWORD_FILE_NAME = "simple_auth_manager_passwords.json.generated"


# --- the scale-out stack's settings: `make stack` and docker-compose.yml read the same names -----------


class Setting(NamedTuple):
    """One variable of the scale-out stack, as ``.env.example`` lists it and both deployments read it.

    ``scope``: ``both`` (``python -m devstack stack`` and ``docker-compose.yml``), ``stack`` (the local
    stack only) or ``compose`` (the compose file only). A ``secret`` has no default: ``compose-env`` and
    the local stack generate it (kept in a mode-600 file, never printed into a log).
    """

    name: str
    default: str
    scope: str
    help: str
    secret: bool = False


#: every variable of ``.env.example``, in its order (``tests/stack/test_settings.py`` checks the file, the
#: compose file and the stack against this table)
STACK_SETTINGS: tuple[Setting, ...] = (
    Setting("AIRFLOW_UID", "50000", "compose", "user id owning the files the containers write (Linux: `id -u`)"),
    Setting("AIRFLOW_IMAGE_NAME", "interest-pipeline-airflow:3.3.2", "compose", "the image built from ./Dockerfile"),
    Setting("AIRFLOW_PORT", "8080", "both", "Airflow UI and REST API, on 127.0.0.1 only"),
    Setting("MLFLOW_PORT", "5000", "both", "MLflow UI and REST API, on 127.0.0.1 only"),
    Setting("POSTGRES_PORT", "15432", "stack", "PostgreSQL of the local stack on 127.0.0.1 (compose: internal 5432)"),
    Setting("REDIS_PORT", "16379", "stack", "Redis of the local stack on 127.0.0.1 (compose: internal 6379)"),
    Setting("AIRFLOW_WORKERS", "2", "stack",
            "Celery workers the local stack starts (compose: docker compose up -d --scale airflow-worker=N)"),
    Setting("AIRFLOW_WORKER_CONCURRENCY", "2", "both",
            "task slots per Celery worker (each TensorFlow task wants a core)"),
    Setting("MLFLOW_AUTH_ADMIN_USERNAME", "admin", "both", "MLflow's basic-auth administrator"),
    Setting("MLFLOW_TRACKING_USERNAME", "pipeline", "both",
            "the pipeline's MLflow account (writes runs and model versions; MLflow's standard client variable)"),
    Setting("AIRFLOW_ADMIN_PASSWORD", "", "both", "login of the Airflow UI and REST API: user `admin`", True),
    Setting("AIRFLOW_DB_PASSWORD", "", "both", "PostgreSQL role `airflow` (Airflow metadata, Celery results)", True),
    Setting("MLFLOW_DB_PASSWORD", "", "both", "PostgreSQL role `mlflow` (MLflow tracking and registry store)", True),
    Setting("REDIS_PASSWORD", "", "both", "the Celery broker", True),
    Setting("AIRFLOW_FERNET_KEY", "", "both",
            "Airflow: encrypts connections/variables (a Fernet key: 32 url-safe base64-encoded bytes)", True),
    Setting("AIRFLOW_JWT_SECRET", "", "both",
            "Airflow: signs the API tokens of users and of tasks (the same in every Airflow process)", True),
    Setting("AIRFLOW_API_SECRET_KEY", "", "both", "Airflow: signs the UI session", True),
    Setting("MLFLOW_AUTH_ADMIN_PASSWORD", "", "both", "MLflow's basic-auth administrator password", True),
    Setting("MLFLOW_TRACKING_PASSWORD", "", "both", "the pipeline's MLflow account password", True),
    Setting("MLFLOW_FLASK_SERVER_SECRET_KEY", "", "both", "MLflow: signs the auth app's forms (CSRF)", True),
    Setting("IEP_DATA_DIR", "/data", "compose",
            "warehouse.duckdb, the Parquet exports and the landing folder (volume iep-warehouse)"),
    Setting("IEP_ARTIFACT_DIR", "/artifacts", "compose", "per-DAG-run artifact folders (volume iep-artifacts)"),
    Setting("IEP_MLFLOW_ARTIFACT_ROOT", "/mlflow/artifacts", "compose",
            "the MLflow server's artifact store (volume mlflow-artifacts; clients use mlflow-artifacts:/ URIs)"),
    Setting("MLFLOW_TRACKING_URI", "http://mlflow:5000", "compose",
            "the MLflow tracking server, as the Airflow containers reach it"),
    Setting("IEP_DUCKDB_MEMORY_LIMIT", "80%", "compose",
            "memory budget of each warehouse process (dbt, loader, exporter; DuckDB's pool gets 85 % of it)"),
)
SETTINGS = {s.name: s for s in STACK_SETTINGS}
SECRET_NAMES: tuple[str, ...] = tuple(s.name for s in STACK_SETTINGS if s.secret)


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
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{airflow_user(env)}:admin")
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
    # setproctitle (Celery workers, the api-server) keeps the environment readable in /proc: what
    # devstack.supervisor.tagged_processes finds a server's processes by
    env.setdefault("SPT_NOENV", "1")
    env.setdefault("IEP_DATA_DIR", str(REPO / ".data"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))
    return env


def airflow_user(env: Mapping[str, str]) -> str:
    """The admin user of the simple auth manager (``IEP_AIRFLOW_USER``, default ``admin``)."""
    return env.get("IEP_AIRFLOW_USER") or "admin"


def env_host() -> str:
    return os.environ.get("AIRFLOW__API__HOST") or HOST


def tool(name: str) -> str:
    """A console script of this environment: beside the interpreter, else on PATH (the Airflow image)."""
    beside = BIN / name
    return str(beside) if beside.exists() else (shutil.which(name) or str(beside))


# --- the pipeline's settings, read through ml_tasks.config ------------------------------------------

#: the variables ``ml_tasks.config`` reads paths and URIs from
_PIPELINE_PREFIXES = ("IEP_", "MLFLOW_")


@contextlib.contextmanager
def _pipeline_environ(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with the IEP_*/MLFLOW_* variables of ``env`` (empty ones unset), restored after."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_PIPELINE_PREFIXES)}
    wanted = {k: v for k, v in env.items() if k.startswith(_PIPELINE_PREFIXES) and v}
    for key in saved:
        del os.environ[key]
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key in wanted:
            os.environ.pop(key, None)
        os.environ.update(saved)


class PipelineLocations(NamedTuple):
    """Where the pipeline keeps what the servers serve (from ``ml_tasks.config.Paths``)."""

    data_dir: Path
    dbt_project_dir: Path
    tracking_uri: str
    mlflow_artifact_root: Path


def pipeline_locations(env: Mapping[str, str] | None = None) -> PipelineLocations:
    """The pipeline's locations for ``env`` (default: this process's environment), as
    ``ml_tasks.config.Paths.from_env()`` reads them."""
    from ml_tasks.config import Paths

    with _pipeline_environ(os.environ if env is None else env):
        paths = Paths.from_env()
        root = paths.mlflow_artifact_root  # a property that reads the environment
    return PipelineLocations(paths.data_dir, paths.dbt_project_dir, paths.tracking_uri,
                             root.expanduser().resolve())


def mlflow_store(env: Mapping[str, str] | None = None) -> tuple[str, Path]:
    """(backend store URI, artifact root) the pipeline writes, from ``ml_tasks.config.Paths``."""
    where = pipeline_locations(env)
    return where.tracking_uri, where.mlflow_artifact_root
