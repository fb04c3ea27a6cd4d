"""Run the real Airflow 3 and MLflow servers on this machine (``make airflow``, ``make mlflow``).

    python -m devstack airflow [--port 8080] [--no-triggerer]
    python -m devstack mlflow  [--port 5000]
    python -m devstack model   [--port 5001] [--alias champion]
    python -m devstack stack  [--dir .stack] [--workers 2]   # make stack: Celery, PostgreSQL, Redis, MLflow
    python -m devstack provision          # what airflow-init runs in the compose stack
    python3 -m devstack compose-env       # .env with generated secrets for docker compose (no venv needed)
    python3 -m devstack mlflow-auth config PATH | user URL   # MLflow's basic-auth app (compose's mlflow)

``airflow`` migrates the metadata DB (SQLite under ``AIRFLOW_HOME``, default ``<repo>/.airflow``),
provisions the pools, variables and connections of ``devstack/provision.py``, writes the DAG folder's
dbt manifest when it is stale, generates the admin password of Airflow's simple auth manager (kept in
``AIRFLOW_HOME``, never in git), then runs ``api-server``, ``scheduler``, ``dag-processor`` and
``triggerer`` as child processes bound to 127.0.0.1 and prints the login once all are healthy.

``mlflow`` runs ``mlflow server`` on 127.0.0.1 over the store the pipeline writes
(``MLFLOW_TRACKING_URI``, default ``sqlite:///<IEP_DATA_DIR>/mlflow/mlflow.db``, artifacts under
``<IEP_DATA_DIR>/mlflow/artifacts``).

``stack`` is the scale-out deployment on this machine (``devstack/stack.py``): its own PostgreSQL and
Redis, MLflow with basic auth and served artifacts, Airflow with the CeleryExecutor and two workers.

``model`` serves the registered model ``user_interest_model@<alias>`` from that store with
``mlflow models serve`` (``--env-manager local``: this environment's packages) on 127.0.0.1:5001:
``POST /invocations`` with a user's recent events returns ranked categories.

Shutdown: Ctrl-C (SIGINT), SIGTERM or SIGHUP stop every process started, grandchildren included
(``devstack/supervisor.py``). ``kill -9`` still takes the direct children down (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Standard library only up to here and in devstack.env/devstack.credentials: `compose-env` runs on a
# plain python3. The servers' modules (ml_tasks, mlflow) are imported by the commands that need them.
from devstack.env import AIRFLOW_PORT, HOST, MLFLOW_PORT, MODEL_PORT, REPO, tool


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p = sub.add_parser("stack", help="PostgreSQL, Redis, MLflow (basic auth), Airflow on Celery workers; Ctrl-C stops all")
    p.add_argument("--dir", type=Path, default=None,
                   help="the stack's folder (default $IEP_STACK_DIR or <repo>/.stack; git-ignored)")
    p.add_argument("--workers", type=int, default=None, help="Celery workers (default $AIRFLOW_WORKERS or 2)")
    p.add_argument("--host", default=HOST, help="bind address of every component (default 127.0.0.1)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for a healthy start")
    sub.add_parser("provision", help="migrate the Airflow DB, create pools/variables/connections, the login")
    p = sub.add_parser("compose-env", help="write .env for docker compose from .env.example, secrets generated")
    p.add_argument("-o", "--output", type=Path, default=REPO / ".env")
    p.add_argument("--force", action="store_true", help="replace an existing file (new secrets!)")
    p = sub.add_parser("mlflow-auth", help="MLflow basic auth: `config PATH` (ini, mode 600), `user URL` (account)")
    p.add_argument("action", choices=["config", "user"])
    p.add_argument("target", help="PATH of the ini file, or URL of the MLflow server")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.server == "compose-env":
        from devstack.credentials import write_compose_env

        return write_compose_env(args.output, args.force)
    if args.server == "mlflow-auth":
        from devstack.mlflow_auth import main as mlflow_auth

        return mlflow_auth([args.action, args.target])
    if not Path(tool("airflow")).exists() and args.server in ("airflow", "provision", "stack"):
        print(f"error: no airflow beside {sys.executable} or on PATH; run `make install`", file=sys.stderr)
        return 2
    if args.server == "provision":
        from devstack.provision import provision_only

        return provision_only()
    if args.server == "stack":
        import os

        from devstack.stack import StackConfig, serve_stack

        cfg = StackConfig.from_env(dict(os.environ), root=args.dir, host=args.host, workers=args.workers)
        return serve_stack(cfg, timeout=args.timeout)
    from devstack import servers

    if args.server == "airflow":
        return servers.serve_airflow(args.host, args.port, triggerer=not args.no_triggerer, timeout=args.timeout)
    if args.server == "model":
        return servers.serve_model(args.host, args.port, alias=args.alias, timeout=args.timeout)
    return servers.serve_mlflow(args.host, args.port, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
