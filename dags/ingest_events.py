"""
### ingest_events

Loads new behaviour log files from the **landing folder** (`IEP_LANDING_DIR`, default
`.data/landing/`) into the DuckDB warehouse table `raw.events`.

* Files are recognised by content (sha256): a file already loaded is skipped, a changed file is a new load.
  CSV may be gzip or zstd compressed; Parquet files in `key=value/` sub-folders get those partition columns.
* Any layout loads through a source definition: a `_source.yml` in a (sub-)folder of the landing folder
  applies to the files below it (README: "Input formats and what happens to bad rows").
* Rows that break a rule (unknown event type, missing id, bad timestamp, wrong field count, a line that is
  not UTF-8) go to `raw.rejected_events` with file, line and reason; every load is recorded in `raw.loads`
  with `rows_read = rows_loaded + rows_rejected`.
* A file with the wrong columns, or with more than `max_reject_ratio` (default 20 %) of its rows rejected,
  fails with one sentence naming the file (and the commonest reasons); nothing of it is loaded. The other
  files still load, and the task fails at the end naming each failed file. The summary lists every file
  that was not loaded and why.

Trigger it with an `events_path` to load one file or Parquet folder (format `generic`, `taobao` or
`movielens`, or a `source` definition). Both paths are resolved relative to the landing folder and must
lie inside it or inside a folder listed in `IEP_INGEST_ROOTS`; anything else is refused. When rows were
loaded it updates the **raw_events** asset, which schedules `build_warehouse`; when nothing was new the
task is skipped and nothing downstream runs.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from pipeline_common import DEFAULT_ARGS, RAW_EVENTS, START_DATE, WAREHOUSE_POOL

from ml_tasks.contracts import MAX_REJECT_RATIO, SOURCE_FORMATS


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
            description="Load this one file or Parquet folder instead of scanning the landing folder "
                        "(inside the landing folder or IEP_INGEST_ROOTS).",
        ),
        "format": Param(
            "generic",
            enum=list(SOURCE_FORMATS),
            description="Source format of the file(s) where no source definition applies.",
        ),
        "source": Param(
            None,
            type=["null", "string"],
            description="A source definition (YAML) for another layout, instead of format "
                        "(inside the landing folder or IEP_INGEST_ROOTS).",
        ),
        "max_reject_ratio": Param(
            MAX_REJECT_RATIO,
            type="number",
            minimum=0,
            maximum=1,
            description="A file with a larger share of rejected rows fails as a whole.",
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

        paths = Paths.from_env()
        summary = data.ingest(paths, params["events_path"], params["format"], source=params.get("source"),
                              max_reject_ratio=params.get("max_reject_ratio", MAX_REJECT_RATIO),
                              allowed_roots=data.allowed_roots(paths))
        if summary["rows_loaded"] == 0:
            raise AirflowSkipException(f"nothing new to load: {summary}")
        return summary

    load_new_files()


ingest_events()
