"""The three servers: Airflow (api-server, scheduler, dag-processor, triggerer), MLflow, the model server.

Each runs in the foreground under a :class:`~devstack.supervisor.Supervisor` bound to 127.0.0.1 by
default, prints how to reach it once healthy, and stops every process it started on Ctrl-C, SIGTERM or
SIGHUP (or when one of them dies).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from devstack.credentials import ensure_password
from devstack.env import BIN, MARKER_ENV, airflow_env, mlflow_store, pipeline_locations, tool
from devstack.health import airflow_healthy, http_ok, mlflow_healthy, port_in_use
from devstack.provision import provision
from devstack.supervisor import (
    Stop,
    Supervisor,
    become_subreaper,
    descendants,
    ignore_stop_signals,
    install_stop_handlers,
    reap_orphans,
    supervise_one,
)
from ml_tasks.contracts import CHAMPION_ALIAS, EXPERIMENT_NAME, REGISTERED_MODEL_NAME


def serve_airflow(host: str, port: int, triggerer: bool = True, timeout: float = 600.0) -> int:
    """Provision, then run the Airflow components until stopped; print the login once all are healthy."""
    env = airflow_env(host, port)
    env.setdefault(MARKER_ENV, uuid.uuid4().hex)
    home = Path(env["AIRFLOW_HOME"])
    log_dir = home / "logs" / "servers"
    log_dir.mkdir(parents=True, exist_ok=True)
    if port_in_use(host, port):
        print(f"error: {host}:{port} is already in use (another Airflow?); stop it or pass --port",
              file=sys.stderr)
        return 2
    become_subreaper()
    install_stop_handlers()
    url = f"http://{host}:{port}"
    sup = Supervisor(env, log_dir)
    started = time.monotonic()
    try:
        print(f"Airflow home {home}, DAGs {env['AIRFLOW__CORE__DAGS_FOLDER']}", flush=True)
        user, password, password_file = ensure_password(env)
        provision(env, log_dir / "setup.log")
        airflow = tool("airflow")
        sup.start("api-server", [airflow, "api-server", "--host", host, "--port", str(port), "--workers", "1"])
        sup.start("scheduler", [airflow, "scheduler"])
        sup.start("dag-processor", [airflow, "dag-processor"])
        if triggerer:
            sup.start("triggerer", [airflow, "triggerer"])
        print(f"  starting {', '.join(sup.children)} (logs: {log_dir}) ...", flush=True)
        while not airflow_healthy(url, triggerer):
            if dead := sup.dead():
                return sup.report_dead(dead)
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"Airflow not healthy after {timeout:.0f}s; see {log_dir}")
            time.sleep(2)
        # the password goes to a terminal only: a redirected output is a log file that others may read
        shown = password if sys.stdout.isatty() else "<password>"
        print(f"\nAirflow is up in {time.monotonic() - started:.0f}s: {url}\n"
              f"  login: {user} / {shown}   (kept in {password_file}, mode 600)\n"
              f"  the DAGs start paused: switch them on in the UI (or trigger one by hand).\n"
              f"  Ctrl-C stops the api-server, scheduler, dag-processor"
              f"{' and triggerer' if triggerer else ''}.", flush=True)
        while True:
            if dead := sup.dead():
                return sup.report_dead(dead)
            reap_orphans({p.pid for p in sup.children.values()})
            time.sleep(1)
    except Stop as stop:
        print(f"\n{stop.args[0]}: stopping Airflow ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        ignore_stop_signals()
        sup.stop()
        print(f"stopped (no process left: {not descendants(os.getpid())})", flush=True)


def serve_mlflow(host: str, port: int, timeout: float = 300.0) -> int:
    """``mlflow server`` over the store the pipeline writes (``MLFLOW_TRACKING_URI``, its artifact root)."""
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
    return supervise_one(
        env, log_dir, "mlflow",
        [tool("mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
         "--backend-store-uri", uri, "--default-artifact-root", artifacts.as_uri()],
        healthy=lambda: mlflow_healthy(url), timeout=timeout, what="MLflow",
        starting=f"MLflow store {uri}\n  artifacts {artifacts}",
        ready=lambda secs: (f"MLflow is up in {secs:.0f}s: {url}\n"
                            f"  experiment '{EXPERIMENT_NAME}', registered model '{REGISTERED_MODEL_NAME}'"
                            f" (alias '{CHAMPION_ALIAS}')"),
    )


def serve_model(host: str, port: int, alias: str = CHAMPION_ALIAS, timeout: float = 300.0) -> int:
    """``mlflow models serve`` of ``user_interest_model@alias`` over the pipeline's store."""
    env = dict(os.environ)
    env.setdefault(MARKER_ENV, uuid.uuid4().hex)
    where = pipeline_locations(env)
    uri = where.tracking_uri
    env["MLFLOW_TRACKING_URI"] = uri
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))  # the scoring server's uvicorn
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        print(f"error: no MLflow store at {uri}; run `make run` first", file=sys.stderr)
        return 2
    if port_in_use(host, port):
        print(f"error: {host}:{port} is already in use; stop it or pass --port", file=sys.stderr)
        return 2
    model_uri = f"models:/{REGISTERED_MODEL_NAME}@{alias}"
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        version = mlflow.MlflowClient().get_model_version_by_alias(REGISTERED_MODEL_NAME, alias).version
    except Exception as exc:  # noqa: BLE001 - a missing model or alias is the user's situation, not a crash
        print(f"error: {model_uri} not found in {uri} ({str(exc).splitlines()[0][:200]}); "
              f"run `make run` first, or pass --alias", file=sys.stderr)
        return 2
    log_dir = where.data_dir / "mlflow" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{host}:{port}"
    example = ('{"dataframe_split": {"columns": ["user_id", "category_id", "event_type", "event_ts"], '
               '"data": [["u1", "c001", "view", 1767225600]]}, "params": {"top_n": 5}}')
    return supervise_one(
        env, log_dir, "model",
        [tool("mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", host, "--port", str(port), "--workers", "1"],
        healthy=lambda: http_ok(f"{url}/ping"), timeout=timeout, what="the model server",
        starting=f"serving {model_uri} (version {version}) from {uri}",
        ready=lambda secs: (f"Model version {version} is up in {secs:.0f}s: {url}/invocations\n"
                            f"  curl -s {url}/invocations -H 'Content-Type: application/json' -d '{example}'"),
    )
