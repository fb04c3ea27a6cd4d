"""
### ingest_events

Loads new behaviour log files from the **landing folder** (`IEP_LANDING_DIR`, default
`.data/landing/`) into the DuckDB warehouse table `raw.events`.

* Files are recognised by content (sha256): a file already loaded is skipped, a changed file is a new load.
* Rows that break a rule (unknown event type, missing id, bad timestamp, wrong field count) go to
  `raw.rejected_events` with file, line and reason; every load is recorded in `raw.loads` with
  `rows_read = rows_loaded + rows_rejected`.
* A file with the wrong columns fails the task with one sentence naming the file and the columns
  expected and found; the warehouse is left unchanged.

Trigger it with a `events_path` to load one file from anywhere (format `generic`, `taobao` or
`movielens`). When rows were loaded it updates the **raw_events** asset, which schedules
`build_warehouse`; when nothing was new the task is skipped and nothing downstream runs.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from pipeline_common import DEFAULT_ARGS, RAW_EVENTS, START_DATE, WAREHOUSE_POOL

from ml_tasks.contracts import SOURCE_FORMATS


@dag(
    dag_id="ingest_events",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["warehouse", "ingest"],
    params={
        "events_path": Param(
            None,
            type=["null", "string"],
            description="Load this one file instead of scanning the landing folder.",
        ),
        "format": Param(
            "generic",
            enum=list(SOURCE_FORMATS),
            description="Source format of the file(s).",
        ),
    },
)
def ingest_events():
    @task(pool=WAREHOUSE_POOL, outlets=[RAW_EVENTS])
    def load_new_files(params=None) -> dict:
        """Load new files into raw.events; skip (no asset event) when nothing new was loaded."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ml_tasks.config import Paths
        from ml_tasks.steps import data

        summary = data.ingest(Paths.from_env(), params["events_path"], params["format"])
        if summary["rows_loaded"] == 0:
            raise AirflowSkipException(f"nothing new to load: {summary}")
        return summary

    load_new_files()


ingest_events()
