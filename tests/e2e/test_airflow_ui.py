"""The Airflow UI on the real api-server, scheduler, dag-processor and triggerer, in headless Chromium."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import DAG_RUN_TIMEOUT, PROJECT_DAGS, airflow_login, screenshot

pytestmark = pytest.mark.e2e


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_api_requires_a_login_but_health_is_open(airflow):
    assert _status(f"{airflow.url}/api/v2/monitor/health") == 200
    assert _status(f"{airflow.url}/api/v2/dags") == 401
    assert _status(f"{airflow.url}/api/v2/dags", {"Authorization": "Bearer not-a-token"}) in (401, 403)
    assert airflow.url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(f"{airflow.url}/auth/token", method="POST",
                                     data=json.dumps({"username": airflow.username, "password": "wrong"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code in (401, 403)


def test_every_component_is_healthy(airflow_api):
    health = airflow_api.get("/api/v2/monitor/health")
    for component in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[component]["status"] == "healthy", health


def test_login_and_see_the_project_dags(page, airflow, project_dags, airflow_api):
    airflow_login(page, airflow, "/dags")
    for dag_id in PROJECT_DAGS:
        page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "airflow-dags", "airflow-dags.png")
    # the warehouse writers' pool exists with its single slot
    pool = airflow_api.get("/api/v2/pools/warehouse_writer")
    assert pool["slots"] == 1
    # every DAG explains itself to the operator (doc_md, shown by the UI's "Dag docs" button)
    for dag_id in PROJECT_DAGS:
        doc = airflow_api.get(f"/api/v2/dags/{dag_id}/details").get("doc_md") or ""
        assert dag_id in doc and len(doc) > 200, f"{dag_id} has no operator docs"


def test_trigger_train_interest_model_and_see_it_succeed(page, airflow, trained_run, airflow_api):
    """The run was triggered through the UI's trigger form (fixture ``trained_run``); the UI shows it green."""
    assert trained_run.state == "success"
    run = airflow_api.get(f"/api/v2/dags/{trained_run.dag_id}/dagRuns/{trained_run.run_id}")
    assert run["run_type"] == "manual" and run["conf"].get("epochs") == 2
    tasks = airflow_api.get(f"/api/v2/dags/{trained_run.dag_id}/dagRuns/{trained_run.run_id}/taskInstances")
    states = {ti["task_id"]: ti["state"] for ti in tasks["task_instances"]}
    assert states and set(states.values()) == {"success"}, states

    airflow_login(page, airflow, f"/dags/{trained_run.dag_id}/runs/{trained_run.run_id}")
    page.get_by_text(trained_run.run_id).first.wait_for()
    page.get_by_text("success", exact=False).first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "airflow-train-run", "airflow-train-run.png")


def test_build_warehouse_runs_one_dbt_build_and_shows_every_model(page, airflow, airflow_api, project_dags,
                                                                  pipeline_data, trained_run):
    """build_warehouse through the real scheduler and triggerer (watcher mode): the producer's one
    ``dbt build`` and a green task per model and test, in the UI's grid."""
    dag_id, run_id = "build_warehouse", "e2e__build"
    airflow_api.trigger(dag_id, run_id)
    state, seconds = airflow_api.wait_for_run(dag_id, run_id, DAG_RUN_TIMEOUT)
    print(f"[e2e] {dag_id} run {run_id}: {state} in {seconds:.0f}s")
    assert state == "success", airflow_api.task_failures(dag_id, run_id)
    tis = airflow_api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=200)["task_instances"]
    states = {ti["task_id"]: ti["state"] for ti in tis}
    assert states["dbt.dbt_producer_watcher"] == "success"
    dbt_tasks = [t for t in states if t.startswith("dbt.") and t != "dbt.dbt_producer_watcher"]
    assert len(dbt_tasks) >= 17 and {states[t] for t in dbt_tasks} == {"success"}, states
    assert states["export_ml_tables"] == "success"
    airflow_login(page, airflow, f"/dags/{dag_id}/runs/{run_id}")
    page.get_by_text(run_id).first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "airflow-build-run")
