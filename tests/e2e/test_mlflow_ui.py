"""The MLflow UI on the real tracking server, over the store the training DAG wrote, in headless Chromium."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from ml_tasks.contracts import BASELINE_NAMES, CHAMPION_ALIAS, EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from tests.e2e.conftest import screenshot

pytestmark = pytest.mark.e2e

#: the baselines EVALUATION.md makes mandatory in every run
REQUIRED_BASELINES = {"popularity", "recency_decay"}


def _api(mlflow, path: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(f"{mlflow.url}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read().decode())


def _experiment_id(mlflow) -> str:
    query = urllib.parse.urlencode({"experiment_name": EXPERIMENT_NAME})
    return _api(mlflow, f"experiments/get-by-name?{query}")["experiment"]["experiment_id"]


def _close_assistant(page) -> None:
    """MLflow 3 opens an assistant side panel on first visit; it would hide half of the table."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()


def test_mlflow_ui_answers_on_localhost(page, mlflow):
    assert mlflow.url.startswith("http://127.0.0.1:")
    page.goto(f"{mlflow.url}/#/experiments")
    page.get_by_text("Experiments", exact=True).first.wait_for()
    assert _api(mlflow, "experiments/search", {"max_results": 10})["experiments"]


def test_runs_next_to_the_baselines(page, mlflow, trained_run):
    experiment_id = _experiment_id(mlflow)
    found = _api(mlflow, "runs/search", {"experiment_ids": [experiment_id], "max_results": 200,
                                         "filter": "attributes.run_name LIKE 'eval:%'"})
    methods = {r["info"]["run_name"].removeprefix("eval:") for r in found.get("runs", [])}
    assert REQUIRED_BASELINES <= methods, methods
    learned = methods - set(BASELINE_NAMES)
    assert learned, f"no run of the learned model next to the baselines: {methods}"
    metric_names = {m["key"] for r in found["runs"] for m in r["data"].get("metrics", [])}
    assert "ndcg_at_10" in metric_names, metric_names

    search = urllib.parse.quote_plus("attributes.run_name LIKE 'eval:%'")
    page.goto(f"{mlflow.url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
              f"&searchFilter={search}")
    page.locator("button[data-component-id*='runnamecellrenderer']").first.wait_for()
    _close_assistant(page)
    # the eval runs are nested under the parent run of the DAG run (the only training run here)
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for method in sorted(REQUIRED_BASELINES | learned):
        page.get_by_text(f"eval:{method}", exact=True).first.wait_for()
    page.locator("label:has(input[value=CHART])").first.click()  # metrics side by side, per run
    search_charts = page.get_by_placeholder("Search metric charts")
    search_charts.fill("ndcg")
    page.get_by_text("ndcg_at_10", exact=True).first.wait_for()
    page.wait_for_timeout(2000)  # let the charts animate in
    screenshot(page, "mlflow-runs-vs-baselines", "mlflow-runs.png")


def test_registered_model_has_the_champion_alias(page, mlflow, trained_run):
    query = urllib.parse.urlencode({"name": REGISTERED_MODEL_NAME, "alias": CHAMPION_ALIAS})
    version = _api(mlflow, f"registered-models/alias?{query}")["model_version"]
    assert version["name"] == REGISTERED_MODEL_NAME

    page.goto(f"{mlflow.url}/#/models/{REGISTERED_MODEL_NAME}")
    page.get_by_text(f"Version {version['version']}", exact=True).first.wait_for()
    page.get_by_text(f"@ {CHAMPION_ALIAS}", exact=False).first.wait_for()
    _close_assistant(page)
    page.wait_for_timeout(1000)
    screenshot(page, "mlflow-registered-model", "mlflow-model.png")
