"""Run the pipeline through the real Airflow DAGs with ``airflow dags test`` (``make run``, ``make update``).

Sets up a repo-local Airflow (SQLite metadata DB under ``.airflow/``, the one-slot warehouse pool),
writes the synthetic data set (or copies a real sample, ``--data taobao``) to the landing folder when
it is empty, then runs the DAGs one after another in this process group and ends with the pipeline
summary.

    python scripts/pipeline.py                       # ingest_events -> build_warehouse -> train_interest_model
    python scripts/pipeline.py --dags update_interest_model
    python scripts/pipeline.py --data taobao         # the real Taobao sample (data/samples) instead
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ml_tasks.contracts import POOLS

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_DAGS = ["ingest_events", "build_warehouse", "train_interest_model"]
#: ``--data``: the synthetic generator, or a real sample shipped in data/samples (file, loader format)
SAMPLES = {
    "taobao": (REPO / "data" / "samples" / "taobao_userbehavior" / "UserBehavior_sample.csv", "taobao"),
}


def airflow_env() -> dict[str, str]:
    """The environment every Airflow command of the project runs with (defaults, overridable)."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")  # no usage reports to a web service
    env.setdefault("IEP_DATA_DIR", str(REPO / ".data"))
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))
    return env


def run(cmd: list[str], env: dict[str, str], quiet: bool = False, log: Path | None = None) -> None:
    start = time.monotonic()
    print(f"$ {' '.join(cmd)}", flush=True)
    if log is not None:
        with log.open("a") as handle:
            proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    else:
        proc = subprocess.run(cmd, env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL if quiet else None)
    if proc.returncode != 0:
        where = f" (log: {log})" if log else ""
        if log is not None:
            print(log.read_text()[-6000:], file=sys.stderr)
        sys.exit(f"failed after {time.monotonic() - start:.0f}s: {' '.join(cmd)}{where}")
    print(f"  done in {time.monotonic() - start:.0f}s", flush=True)


def setup_airflow(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the pools the DAGs use (idempotent)."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log = home / "setup.log"
    run([str(BIN / "airflow"), "db", "migrate"], env, log=log)
    for name, (slots, description) in POOLS.items():
        run([str(BIN / "airflow"), "pools", "set", name, str(slots), description], env, log=log)


def dbt_parse(env: dict[str, str]) -> None:
    """Write dbt's manifest so Cosmos renders the DAG from it instead of calling dbt at every parse."""
    project = REPO / "dbt_project"
    run([str(BIN / "dbt"), "parse", "--quiet", "--project-dir", str(project), "--profiles-dir", str(project)],
        env, quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dags", nargs="+", default=DEFAULT_DAGS)
    parser.add_argument("--no-generate", action="store_true", help="do not write the synthetic data set")
    parser.add_argument("--data", choices=["synthetic", *SAMPLES], default="synthetic",
                        help="what lands in the landing folder when it is empty: the synthetic log (default) or "
                             "a real sample from data/samples (its own data folder: IEP_DATA_DIR)")
    args = parser.parse_args(argv)

    env = airflow_env()
    started = time.monotonic()
    setup_airflow(env)
    dbt_parse(env)
    landing = Path(env.get("IEP_LANDING_DIR") or Path(env["IEP_DATA_DIR"]) / "landing")
    conf = {}
    if args.data in SAMPLES:
        source, fmt = SAMPLES[args.data]
        conf["ingest_events"] = {"format": fmt}
        if not (landing / source.name).exists():
            landing.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, landing / source.name)
    elif "ingest_events" in args.dags and not args.no_generate and not any(landing.glob("*")):
        run([sys.executable, "-m", "ml_tasks", "generate"], env)
    logs = Path(env["AIRFLOW_HOME"]) / "dags_test_logs"
    logs.mkdir(parents=True, exist_ok=True)
    for dag_id in args.dags:
        log = logs / f"{dag_id}.log"
        log.write_text("")
        extra = ["--conf", json.dumps(conf[dag_id])] if dag_id in conf else []
        run([str(BIN / "airflow"), "dags", "test", dag_id, *extra], env, log=log)
    print(f"\npipeline finished in {time.monotonic() - started:.0f}s (Airflow logs: {logs})\n")
    subprocess.run([sys.executable, "-m", "ml_tasks", "summary"], env=env, cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
