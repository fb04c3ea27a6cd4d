"""The pipeline on the scale-out stack: assets through the scheduler and two Celery workers, a worker killed
mid-training, a crash between registering and aliasing, overlapping registry writers, serialised warehouse
writers, an update with nothing new. The runs are made by the fixtures of ``conftest.py``, in order."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.stack.airflow_api import when
from tests.stack.conftest import TRAIN_CONF, WORKERS

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TRAIN, UPDATE, INGEST, BUILD = "train_interest_model", "update_interest_model", "ingest_events", "build_warehouse"
#: the tasks that open the warehouse for writing. The pool holds Cosmos' per-model watcher tasks of
#: build_warehouse too; they only read what the producer reported and wait deferred (a deferred task holds no
#: pool slot), so their start-to-end spans may cover other tasks' runs.
WRITERS = {"load_new_files", "dbt.dbt_producer_watcher", "export_ml_tables", "refresh_warehouse", "score_users"}


def _intervals_disjoint(items: list[tuple[str, float, float]]) -> list[tuple]:
    """Pairs of (name, start, end) that overlap in time (empty when they ran one at a time)."""
    return [(a, b) for a, b in itertools.combinations(items, 2) if a[1] < b[2] and b[1] < a[2]]


def test_a_landing_file_flows_by_assets_to_fresh_scores(stack, switched_on, first_runs):
    api = stack.api
    # the catch-up runs of the cron DAGs, switched on before any data: one each, ended before the file landed
    for dag_id, runs in switched_on["catch_ups"].items():
        assert [r["run_type"] for r in runs] == ["scheduled"], dag_id
        assert when(runs[0]["end_date"]) < first_runs["dropped"], dag_id
    ingest, build, update = first_runs["ingest"], first_runs["build"], first_runs["update"]
    assert (ingest["run_type"], ingest["state"]) == ("scheduled", "success")
    assert api.task_instances(INGEST, ingest["dag_run_id"])["load_new_files"]["state"] == "success"
    assert stack.query("select count(*) from raw.events") == [(switched_on["n_events"],)]
    assert (build["run_type"], build["state"]) == ("asset_triggered", "success")
    assert when(build["start_date"]) >= when(ingest["end_date"]) - 1
    assert (update["run_type"], update["state"]) == ("asset_triggered", "success")
    assert when(update["start_date"]) >= when(build["end_date"]) - 1
    tis = api.task_instances(UPDATE, update["dag_run_id"])
    assert {t: ti["state"] for t, ti in tis.items()} == {t: "success" for t in tis}
    build_tis = api.task_instances(BUILD, build["dag_run_id"])
    hosts = {ti["hostname"] for ti in [*tis.values(), *build_tis.values()] if ti["hostname"]}
    assert hosts == set(WORKERS), hosts  # both workers ran tasks of the chain, nothing else did
    ingest_tis = api.task_instances(INGEST, ingest["dag_run_id"])
    stack.notes["chain_hostnames"] = {f"{dag}.{task}": ti["hostname"] for dag, group in
                                      ((INGEST, ingest_tis), (BUILD, build_tis), (UPDATE, tis))
                                      for task, ti in group.items() if ti["hostname"]}
    stack.timings.update({f"{dag}_s": round(when(run["end_date"]) - when(run["start_date"]), 1)
                          for dag, run in ((INGEST, ingest), (BUILD, build), (UPDATE, update))})
    champion = stack.alias("champion")
    fresh = stack.query("select model_version, n_scores from serving.scoring_runs")
    assert [row[0] for row in fresh] == [champion] and fresh[0][1] > 0
    ((scores,),) = stack.query(f"select count(*) from serving.user_interest_scores where model_version = {champion}")
    assert scores == fresh[0][1]
    print(f"\n[stack] landing file -> fresh scores: {stack.timings['landing_to_update_end_s']:.0f}s "
          f"(ingest {when(ingest['end_date']) - when(ingest['start_date']):.0f}s, build "
          f"{when(build['end_date']) - when(build['start_date']):.0f}s, update "
          f"{when(update['end_date']) - when(update['start_date']):.0f}s, overlapping a training run)")


def test_worker_killed_during_training_is_retried(stack, first_runs):
    api, killed, train_id = stack.api, first_runs["killed_worker"], first_runs["train_id"]
    assert first_runs["train"]["state"] == "success", api.failures(TRAIN, train_id)
    tis = api.task_instances(TRAIN, train_id)
    assert {t: ti["state"] for t, ti in tis.items()} == {t: "success" for t in tis}
    tries = api.tries(TRAIN, train_id, "fit_model")
    assert [t["try_number"] for t in tries] == [1, 2]
    assert (tries[0]["hostname"], tries[0]["state"]) == (killed, "failed")
    assert tries[1]["state"] == "success" and tries[1]["hostname"] in WORKERS
    assert when(tries[1]["start_date"]) > first_runs["killed_at"]
    # the stack started the killed worker again under its name
    assert f"{killed} exited with status -9; starting it again" in stack.server.log_tail(20000)
    worker_log = (stack.root / "stack" / "logs" / f"{killed}.log").read_text()
    assert worker_log.count(f"celery@{killed} ready.") == 2
    # exactly one version for this run (the retried fit registered nothing twice), found by its folder
    folder = stack.run_state(TRAIN, train_id)["folder"]
    assert [v for v, mv in stack.versions().items() if mv["tags"].get("run_dir") == folder] == \
        [stack.run_state(TRAIN, train_id)["registered"]["version"]]
    before, after = first_runs["serving_before_kill"], first_runs["serving_after"]
    assert all(t["duplicated_keys"] == 0 for t in after.values()), after
    assert all(t["rows"] == 0 for t in before.values()), before  # nothing scored yet when the worker died
    with stack.pipeline() as paths:
        last = json.loads((paths.data_dir / "last_run.json").read_text())
    assert after["scoring_runs"]["rows"] == 1  # both runs scored the one champion at the same data time
    assert after["user_interest_scores"]["rows"] == last["scoring"]["n_scores"]
    stack.notes["kill_and_retry"] = {"killed": killed, "retried_on": tries[1]["hostname"],
                                     "rows_before": {t: c["rows"] for t, c in before.items()},
                                     "rows_after": {t: c["rows"] for t, c in after.items()},
                                     "train_hostnames": {task: ti["hostname"] for task, ti in
                                                         api.task_instances(TRAIN, train_id).items()}}
    print(f"\n[stack] kill -9 {killed} during fit_model: retried on {tries[1]['hostname']}; serving rows "
          f"before {({t: c['rows'] for t, c in before.items()})}, after {({t: c['rows'] for t, c in after.items()})}")


def test_register_model_retry_finds_its_version(stack, first_runs):
    api, train_id = stack.api, first_runs["train_id"]
    crash = json.loads((stack.faults / "crashed_before_alias.json").read_text())
    assert (crash["dag_id"], crash["run_id"], crash["try_number"]) == (TRAIN, train_id, "1")
    assert not (stack.faults / "crash_before_alias.json").exists()
    tries = api.tries(TRAIN, train_id, "register_model")
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "success")]
    state = stack.run_state(TRAIN, train_id)
    assert state["registered_version"] == crash["version"] == state["registered"]["version"]
    versions = stack.versions()
    mine = [v for v, mv in versions.items() if mv["tags"].get("run_dir") == state["folder"]]
    assert mine == [crash["version"]]
    assert versions[crash["version"]]["tags"]["model_sha256"]
    assert versions[crash["version"]]["tags"]["gate_decision"] in ("promoted", "refused")
    # two runs registered one version each: the update's and this one
    update_state = stack.run_state(UPDATE, first_runs["update_id"])
    assert sorted(versions) == sorted([crash["version"], update_state["registered"]["version"]])


def test_training_and_update_overlap_through_the_registry_pool(stack, first_runs):
    api = stack.api
    pool = api.get("/api/v2/pools/model_registry")
    assert pool["slots"] == 1
    train, update = first_runs["train"], first_runs["update"]
    assert when(train["start_date"]) < when(update["end_date"]) and when(update["start_date"]) < when(train["end_date"])
    writers = []
    for dag_id, run_id, tasks in ((UPDATE, first_runs["update_id"], ("start_update", "register_model")),
                                  (TRAIN, first_runs["train_id"], ("register_model",))):
        for task_id in tasks:
            for t in api.tries(dag_id, run_id, task_id):
                assert t["pool"] == "model_registry", (dag_id, task_id)
                writers.append((f"{dag_id}.{task_id}#{t['try_number']}", when(t["start_date"]), when(t["end_date"])))
    assert len(writers) == 4 and _intervals_disjoint(writers) == []
    # both evaluated against "no champion"; the first to register promoted, the second was refused
    decisions = {dag: stack.run_state(dag, first_runs[key])["registered"]
                 for dag, key in ((TRAIN, "train_id"), (UPDATE, "update_id"))}
    assert [d["champion_before"] for d in decisions.values()] == [None, None]
    promoted = [d for d in decisions.values() if d["promoted"]]
    refused = [d for d in decisions.values() if not d["promoted"]]
    assert len(promoted) == len(refused) == 1
    winner, loser = promoted[0]["version"], refused[0]["version"]
    assert refused[0]["reason"] == (f"refused: the champion moved from vNone to v{winner} after this run "
                                    f"evaluated against vNone; no alias changed")
    assert stack.alias("champion") == winner and stack.alias("challenger") is None
    versions = stack.versions()
    assert versions[winner]["tags"]["gate_decision"] == "promoted"
    assert versions[loser]["tags"]["gate_decision"] == "refused"
    print(f"\n[stack] overlap: v{winner} promoted by {[k for k, d in decisions.items() if d['promoted']][0]}, "
          f"v{loser} refused; registry pool order: {[w[0] for w in sorted(writers, key=lambda w: w[1])]}")


def test_warehouse_writers_are_serialised_across_workers(stack, first_runs, nothing_new_run):
    api = stack.api
    assert api.get("/api/v2/pools/warehouse_writer")["slots"] == 1
    writers = []
    for dag_id in (INGEST, BUILD, TRAIN, UPDATE):
        for run in api.runs(dag_id):
            for task_id, ti in api.task_instances(dag_id, run["dag_run_id"]).items():
                if task_id not in WRITERS:
                    continue
                assert ti["pool"] == "warehouse_writer", (dag_id, task_id)
                for t in (api.tries(dag_id, run["dag_run_id"], task_id) if ti["try_number"] > 1 else [ti]):
                    if t["hostname"] and t["start_date"] and t["end_date"]:  # ran on a worker (not only marked)
                        writers.append((f"{dag_id}/{run['dag_run_id']}/{task_id}#{t['try_number']}",
                                        when(t["start_date"]), when(t["end_date"]), t["hostname"]))
    ran = {w[0].rsplit("#", 1)[0] for w in writers}
    required = {f"{INGEST}/{first_runs['ingest']['dag_run_id']}/load_new_files",
                f"{INGEST}/{nothing_new_run['second_id']}/load_new_files",
                f"{BUILD}/{first_runs['build']['dag_run_id']}/dbt.dbt_producer_watcher",
                f"{BUILD}/{first_runs['build']['dag_run_id']}/export_ml_tables",
                f"{UPDATE}/{first_runs['update_id']}/refresh_warehouse",
                f"{UPDATE}/{first_runs['update_id']}/score_users",
                f"{TRAIN}/{first_runs['train_id']}/score_users",
                f"{UPDATE}/{nothing_new_run['update_id']}/refresh_warehouse"}
    assert required <= ran, sorted(required - ran)  # every writer of the chain was collected
    assert _intervals_disjoint([w[:3] for w in writers]) == []
    assert {w[3] for w in writers} == set(WORKERS)  # both workers wrote the warehouse, never at once
    # the contended pair: the second writer was ready while the first held the slot, and waited for it
    refresh = api.task_instances(UPDATE, nothing_new_run["update_id"])["refresh_warehouse"]
    second = api.task_instances(INGEST, nothing_new_run["second_id"])["load_new_files"]
    assert when(second["scheduled_when"]) < when(refresh["end_date"]) <= when(second["start_date"])
    assert second["state"] == "skipped"  # nothing new in the landing folder: no asset event, no build
    assert nothing_new_run["second"]["state"] == "success"
    warehouse = stack.data_dir / "warehouse.duckdb"
    assert nothing_new_run["reader_error"] == (
        f"{warehouse}: the warehouse is locked by another process (DuckDB has a single writer, and while it "
        "writes nobody can read); retry when that process is done")
    print(f"\n[stack] {len(writers)} warehouse writes, one at a time, on {sorted({w[3] for w in writers})}; "
          f"refresh_warehouse on {refresh['hostname']}, then the ingest that waited on {second['hostname']}")


def test_update_with_nothing_new_registers_nothing(stack, first_runs, nothing_new_run):
    api, run_id = stack.api, nothing_new_run["update_id"]
    assert nothing_new_run["update"]["state"] == "success", api.failures(UPDATE, run_id)
    assert sorted(stack.versions()) == nothing_new_run["versions_before"]
    assert stack.alias("champion") == nothing_new_run["champion_before"]
    state = stack.run_state(UPDATE, run_id)
    assert state["nothing_new"] is True
    assert state["registered"]["version"] is None and state["registered"]["promoted"] is False
    with stack.pipeline() as paths:
        last = json.loads((paths.data_dir / "last_run.json").read_text())
    assert last["run_dir"] == state["folder"]
    assert "nothing new" in last["registered"]["reason"]
    assert last["registered"]["reason"] == (f"nothing new since champion v{nothing_new_run['champion_before']} "
                                            f"(no samples after its training limit); no version registered")


def test_training_was_triggered_with_its_params(stack, first_runs):
    run = stack.api.run(TRAIN, first_runs["train_id"])
    assert run["run_type"] == "manual" and run["conf"] == TRAIN_CONF
    assert stack.run_state(TRAIN, first_runs["train_id"])["config"]["epochs"] == TRAIN_CONF["epochs"]
