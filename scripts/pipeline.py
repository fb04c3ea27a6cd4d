"""Run the pipeline through the real Airflow DAGs with ``airflow dags test`` (``make run``, ``make update``).

Writes the synthetic data set (or copies a real sample, ``--data taobao``) to the landing folder when it
is empty, sets up a repo-local Airflow (SQLite metadata DB under ``.airflow/``, the one-slot pools) while
dbt writes its manifest, then runs the DAGs one after another and ends with the pipeline summary.

Setup and DAGs go through Airflow's own CLI functions (``db migrate``, ``pools import``, ``dags test``),
all in one Python process (``scripts/dags_test.py``): Airflow's imports and its in-process Execution API
are set up once instead of once per command. Each DAG run is recorded in the metadata DB as with
``airflow dags test``; Airflow's output goes to ``$AIRFLOW_HOME/dags_test_logs/dags_test.log``.

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


def run(cmd: list[str], env: dict[str, str]) -> None:
    start = time.monotonic()
    print(f"$ {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, env=env, cwd=REPO).returncode != 0:
        fail(cmd, start, None)
    print(f"  done in {time.monotonic() - start:.0f}s", flush=True)


def fail(cmd: list[str], start: float, log: Path | None) -> None:
    where = f" (log: {log})" if log else ""
    if log is not None:
        print(log.read_text()[-6000:], file=sys.stderr)
    sys.exit(f"failed after {time.monotonic() - start:.0f}s: {' '.join(cmd)}{where}")


def pools_file(env: dict[str, str]) -> Path:
    """The pools the DAGs use, as ``airflow pools import`` reads them."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    pools = home / "pools.json"
    pools.write_text(json.dumps({name: {"slots": slots, "description": description, "include_deferred": False}
                                 for name, (slots, description) in POOLS.items()}, indent=1))
    return pools


def run_dags(dag_ids: list[str], conf: dict[str, dict], env: dict[str, str], log: Path) -> None:
    """Airflow's setup (migrate, pools; dbt parse alongside), then ``airflow dags test`` of each DAG in
    turn, all in one process (``scripts/dags_test.py``); its progress lines come back on a pipe."""
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, str(REPO / "scripts" / "dags_test.py"), "--setup", str(pools_file(env)),
           "--dbt-parse", str(REPO / "dbt_project"), "--conf", json.dumps(conf), *dag_ids]
    start = time.monotonic()
    with log.open("w") as handle:
        proc = subprocess.Popen(cmd, env={**env, "IEP_PROGRESS_FD": str(write_fd)}, cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT, pass_fds=(write_fd,))
        os.close(write_fd)
        with os.fdopen(read_fd) as progress:
            for line in progress:
                print(line.rstrip("\n"), flush=True)
        proc.wait()
    if proc.returncode != 0:
        fail(cmd, start, log)


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
    run_dags(args.dags, conf, env, logs / "dags_test.log")
    print(f"\npipeline finished in {time.monotonic() - started:.0f}s (Airflow logs: {logs})\n")
    subprocess.run([sys.executable, "-m", "ml_tasks", "summary"], env=env, cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
