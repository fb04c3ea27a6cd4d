"""``airflow dags test`` of several DAGs, one after another, in one Python process (``scripts/pipeline.py``).

Each DAG goes through the CLI's own ``dags test`` function with the CLI's own arguments, so a DAG run is
exactly what ``airflow dags test DAG_ID`` makes (recorded in the metadata DB, tasks run in this process);
Airflow's imports and its in-process Execution API are set up once for all of them instead of once per
DAG (about 8 s each on 2 cores). Stops at the first DAG run that fails.

    python scripts/dags_test.py [--setup POOLS.json] [--dbt-parse PROJECT_DIR]
                                [--conf '{"ingest_events": {"format": "taobao"}}'] DAG_ID [DAG_ID ...]

``--setup``: first ``airflow db migrate`` and ``airflow pools import POOLS.json``, through the CLI's own
functions in this process. ``--dbt-parse``: ``dbt parse`` of the project in a subprocess alongside the
setup, waited for before the first DAG is parsed (Cosmos renders the dbt DAG from its manifest).

Progress lines (``$ airflow dags test DAG_ID``, ``  done in Ns``) go to the file descriptor named by
``IEP_PROGRESS_FD`` when it is set, else to stderr; Airflow's own output goes to stdout and stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dag_ids", nargs="+")
    parser.add_argument("--conf", default="{}", help="JSON object: DAG id -> that DAG run's conf")
    parser.add_argument("--setup", metavar="POOLS_JSON", help="migrate the metadata DB and import these pools first")
    parser.add_argument("--dbt-parse", metavar="PROJECT_DIR", help="write dbt's manifest alongside the setup")
    args = parser.parse_args(argv)
    conf = json.loads(args.conf)
    fd = os.environ.get("IEP_PROGRESS_FD")
    progress = os.fdopen(int(fd), "w", buffering=1) if fd else sys.stderr

    parse = None
    if args.dbt_parse:
        cmd = [str(Path(sys.executable).parent / "dbt"), "parse", "--quiet",
               "--project-dir", args.dbt_parse, "--profiles-dir", args.dbt_parse]
        print(f"$ {' '.join(cmd)} (alongside the setup)", file=progress)
        parse, parse_started = subprocess.Popen(cmd), time.monotonic()  # its errors go to the log

    from airflow.cli.cli_parser import get_parser
    from airflow.exceptions import AirflowException

    cli = get_parser()
    if args.setup:
        for command in (["db", "migrate"], ["pools", "import", args.setup]):
            print(f"$ airflow {' '.join(command)}", file=progress)
            started = time.monotonic()
            command_args = cli.parse_args(command)
            command_args.func(command_args)
            print(f"  done in {time.monotonic() - started:.0f}s", file=progress)
    if parse is not None:
        if parse.wait() != 0:
            print(f"  dbt parse failed (exit status {parse.returncode})", file=progress)
            return 1
        print(f"  dbt parse done in {time.monotonic() - parse_started:.0f}s", file=progress)
    for dag_id in args.dag_ids:
        extra = ["--conf", json.dumps(conf[dag_id])] if dag_id in conf else []
        print(f"$ airflow dags test {dag_id} {' '.join(extra)}".rstrip(), file=progress)
        started = time.monotonic()
        dag_args = cli.parse_args(["dags", "test", dag_id, *extra])
        try:
            dag_args.func(dag_args)
        except (SystemExit, AirflowException) as exc:  # "DagRun failed", an unknown DAG id, the CLI's refusals
            print(f"  {dag_id} failed after {time.monotonic() - started:.0f}s: {exc}", file=progress)
            return 1
        print(f"  done in {time.monotonic() - started:.0f}s", file=progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
