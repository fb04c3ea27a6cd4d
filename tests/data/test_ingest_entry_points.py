"""The loader's entry points: the CLI's ``ingest --source/--max-reject-ratio``, the ``ingest`` step (a
landing folder goes on after a failed file and fails at the end naming each) and the ``ingest_events``
DAG (its params, and paths from outside the landing folder refused)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from ml_tasks.cli import main
from ml_tasks.data.ingest import ingest_dir
from ml_tasks.errors import PipelineError
from tests.conftest import REPO
from tests.data.test_ingest import GOOD, HEADER, rows, write
from tests.data.test_ingest_faults import twenty_rows_ten_bad
from tests.data.test_ingest_sources import RETAILROCKET

# --- the command line --------------------------------------------------------------------------------------


def test_cli_ingest_with_a_source(tmp_path, capsys):
    warehouse = tmp_path / "wh.duckdb"
    assert main(["ingest", "--events", str(RETAILROCKET / "events.csv"), "--source",
                 str(RETAILROCKET / "_source.yml"), "--warehouse", str(warehouse)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (8, 2)
    assert main(["ingest", "--events", str(RETAILROCKET / "events.csv"), "--source",
                 str(RETAILROCKET / "_source.yml"), "--warehouse", str(tmp_path / "b.duckdb"),
                 "--max-reject-ratio", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {RETAILROCKET / 'events.csv'}: expected at most 10% of the rows rejected, found 2 of 10 "
                   "(20%), commonest reasons: itemid not found in items.csv (1 rows, first in line 9), unknown "
                   "event_type (1 rows, first in line 11); nothing was loaded (fix the data or its source definition, "
                   "or raise max_reject_ratio to load the valid rows).")
    bad = write(tmp_path, "columns: {user_id: a}\nextra: 1\n", "bad.yml")
    assert main(["ingest", "--events", str(RETAILROCKET / "events.csv"), "--source", str(bad),
                 "--warehouse", str(warehouse)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad.resolve()}: unknown key 'extra' (the keys are columns, category_from, timestamp, event_types, "
        "header, delimiter)."]
    with pytest.raises(SystemExit):
        main(["ingest", "--format", "taobao", "--source", str(bad)])


# --- the ingest step ------------------------------------------------------------------------------------


def test_ingest_dir_goes_on_after_a_failed_file_and_the_step_names_each(tmp_path, pipeline_paths):
    from ml_tasks.steps import data

    landing = pipeline_paths.landing_dir
    write(landing, twenty_rows_ten_bad(), "a_half_bad.csv")
    write(landing, gzip.compress((HEADER + GOOD).encode())[:25], "b_truncated.csv.gz")
    write(landing, HEADER + GOOD + "u2,i2,c2,buy,1511544071\n", "c_good.csv")
    summary = ingest_dir(landing, pipeline_paths.warehouse)
    assert [Path(f["file"]).name for f in summary["files_failed"]] == ["a_half_bad.csv", "b_truncated.csv.gz"]
    assert (summary["files_loaded"], summary["rows_loaded"]) == (1, 2)
    (landing / "c_good.csv").write_text(HEADER + "u3,i3,c3,fav,1511544072\n")  # new content for the step's run
    with pytest.raises(PipelineError) as info:
        data.ingest(pipeline_paths, None)
    text = str(info.value)
    assert text.startswith("2 landing file(s) could not be loaded (the other 1 loaded, 1 rows): "
                           f"{landing / 'a_half_bad.csv'}: expected at most 20% of the rows rejected")
    assert f"{landing / 'b_truncated.csv.gz'}: expected gzip-compressed text, found a corrupt or truncated" in text
    assert "\n" not in text
    assert rows(pipeline_paths.warehouse, "select count(*) from raw.events") == [(3,)]


# --- paths given to the DAG stay inside the landing folder (point 9) -------------------------------------------


def test_events_path_must_resolve_inside_the_allowed_roots(tmp_path, pipeline_paths, monkeypatch):
    from ml_tasks.steps import data

    landing = pipeline_paths.landing_dir
    inside = write(landing / "2026-01-01", HEADER + GOOD, "events.csv")
    outside = write(tmp_path / "elsewhere", HEADER + "u7,i7,c7,buy,1511544070\n", "events.csv")
    (landing / "escape.csv").symlink_to(outside)
    roots = data.allowed_roots(pipeline_paths)
    assert data.ingest(pipeline_paths, "2026-01-01/events.csv", allowed_roots=roots)["rows_loaded"] == 1
    for given in (str(outside), "../../elsewhere/events.csv", "escape.csv"):
        with pytest.raises(PipelineError) as info:
            data.ingest(pipeline_paths, given, allowed_roots=roots)
        assert str(info.value) == (
            f"{given}: refused: events_path must lie inside the landing folder or another allowed folder ({landing}; "
            f"more in $IEP_INGEST_ROOTS), and this one resolves to {outside.resolve()}")
    with pytest.raises(PipelineError, match=r"^/etc/x.yml: refused: source must lie inside"):
        data.ingest(pipeline_paths, str(inside), source="/etc/x.yml", allowed_roots=roots)
    monkeypatch.setenv("IEP_INGEST_ROOTS", str(tmp_path / "elsewhere"))
    assert data.ingest(pipeline_paths, str(outside), allowed_roots=data.allowed_roots(pipeline_paths))[
        "rows_loaded"] == 1
    assert rows(pipeline_paths.warehouse, "select count(*) from raw.events") == [(2,)]
    assert inside.exists() and os.path.islink(landing / "escape.csv")


def test_the_dag_passes_its_params_and_refuses_outside_paths(tmp_path, pipeline_paths):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "ingest_events.py")).dags["ingest_events"]
    assert dag.params["max_reject_ratio"] == 0.2 and dag.params["source"] is None
    assert dag.params.get_param("max_reject_ratio").schema == {"type": "number", "minimum": 0, "maximum": 1}
    load_new_files = dag.task_dict["load_new_files"].python_callable
    outside = write(tmp_path / "elsewhere", HEADER + GOOD, "events.csv")
    params = {"events_path": str(outside), "format": "generic", "source": None, "max_reject_ratio": 0.2}
    with pytest.raises(PipelineError, match="refused: events_path must lie inside the landing folder"):
        load_new_files(params=params)
    write(pipeline_paths.landing_dir, twenty_rows_ten_bad(), "half_bad.csv")
    summary = load_new_files(params={**params, "events_path": "half_bad.csv", "max_reject_ratio": 0.5})
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (10, 10)
