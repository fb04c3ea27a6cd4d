"""What the DAGs need in Airflow's metadata DB, provisioned at every start (idempotent), and the dbt manifest.

``python -m devstack provision`` does it without starting servers; the compose stack's ``airflow-init``
runs that, so both deployments provision the same things.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.credentials import ensure_password
from devstack.env import AIRFLOW_PORT, REPO, airflow_env, env_host, pipeline_locations, tool
from devstack.supervisor import tail
from ml_tasks.contracts import POOLS  # name -> (slots, description), shared with the DAGs and make run

#: key -> value. The DAGs read paths from IEP_* environment variables, so none are needed today.
VARIABLES: dict[str, str] = {}
#: conn_id -> connection URI. None needed today (DuckDB and MLflow are reached through IEP_*/MLFLOW_*).
CONNECTIONS: dict[str, str] = {}


def run_logged(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    """Run ``cmd`` to completion, its output appended to ``log``; print how long it took; raise on failure."""
    start = time.monotonic()
    print(f"  {what} ...", end="", flush=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n".encode())
        handle.flush()
        proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        print(" failed", flush=True)
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {log}:\n{tail(log)}")
    print(f" {time.monotonic() - start:.0f}s", flush=True)


def dbt_manifest_stale(project: Path) -> bool:
    """True when ``target/manifest.json`` is missing or older than any file of the dbt project."""
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


def provision(env: dict[str, str], log: Path) -> None:
    """Migrate the metadata DB, import :data:`POOLS`, :data:`VARIABLES`, :data:`CONNECTIONS`, and run
    ``dbt parse`` when the manifest Cosmos renders ``build_warehouse`` from is stale."""
    airflow = tool("airflow")
    run_logged([airflow, "db", "migrate"], env, log, "airflow db migrate")
    with tempfile.TemporaryDirectory(prefix="iep-provision-") as tmp:
        if POOLS:
            pools = {name: {"slots": slots, "description": desc, "include_deferred": False}
                     for name, (slots, desc) in POOLS.items()}
            (Path(tmp) / "pools.json").write_text(json.dumps(pools))
            run_logged([airflow, "pools", "import", f"{tmp}/pools.json"], env, log,
                       f"pools {', '.join(f'{n} ({s} slot)' for n, (s, _) in POOLS.items())}")
        if VARIABLES:
            (Path(tmp) / "variables.json").write_text(json.dumps(VARIABLES))
            run_logged([airflow, "variables", "import", "--action-on-existing-key", "overwrite",
                        f"{tmp}/variables.json"], env, log, f"variables {', '.join(VARIABLES)}")
        if CONNECTIONS:
            (Path(tmp) / "connections.json").write_text(json.dumps(CONNECTIONS))
            run_logged([airflow, "connections", "import", "--overwrite", f"{tmp}/connections.json"],
                       env, log, f"connections {', '.join(CONNECTIONS)}")
    project = pipeline_locations(env).dbt_project_dir
    if dbt_manifest_stale(project):
        try:
            run_logged([tool("dbt"), "parse", "--quiet", "--project-dir", str(project),
                        "--profiles-dir", str(project)], env, log, "dbt parse (manifest for Cosmos)")
        except RuntimeError as exc:  # the DAG processor then falls back to `dbt ls`; say so, go on
            print(f"  warning: {exc.args[0].splitlines()[0]}", flush=True)


def provision_only() -> int:
    """``provision``: DB migration, pools/variables/connections and the admin login, no servers."""
    env = airflow_env(env_host(), int(os.environ.get("AIRFLOW__API__PORT") or AIRFLOW_PORT))
    home = Path(env["AIRFLOW_HOME"])
    log = home / "logs" / "servers" / "setup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        user, _, password_file = ensure_password(env)
        provision(env, log)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"provisioned; login '{user}' (password in {password_file})")
    return 0
