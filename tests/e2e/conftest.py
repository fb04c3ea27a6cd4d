"""Fixtures of the browser tests: the real Airflow and MLflow servers, a headless Chromium, a small data set.

One session starts, through ``python -m devstack`` (the code behind ``make airflow`` / ``make mlflow``),
Airflow's api-server, scheduler, dag-processor and triggerer and an MLflow server on free 127.0.0.1
ports, over a temporary AIRFLOW_HOME and a temporary pipeline workspace (IEP_DATA_DIR). At the end both
are stopped the way Ctrl-C stops them, and the session fails if any process they started is left.

The scheduler creates no scheduled runs here (``use_job_schedule = False``): a test runs exactly what
it triggers. The data set is small (200 users, 10 days) and is loaded with ``python -m ml_tasks``
before the training DAG is triggered through the UI.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``scripts/install_browser.sh``), driven by
playwright-python; browsers are never downloaded. Without it the tests fail, they do not skip.
Screenshots go to ``test-artifacts/screenshots/`` (git-ignored); with ``IEP_UPDATE_DOCS_SCREENSHOTS=1``
the ones the README shows are also copied to ``docs/img/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack import harness as servers

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = Path(os.environ.get("IEP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic"]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
DOCS_IMG = REPO / "docs" / "img"
PROJECT_DAGS = ("ingest_events", "build_warehouse", "train_interest_model", "update_interest_model")
#: the small synthetic data set of the browser tests
DATA_ARGS = ["--users", "200", "--days", "10"]
#: generous limits: CI runs on 2 busy cores
SERVER_START_TIMEOUT = 600
UI_TIMEOUT_MS = 90_000
DATA_STEP_TIMEOUT = 1200
DAG_RUN_TIMEOUT = 1800


# --- screenshots ----------------------------------------------------------------------------------


def screenshot(page, name: str, docs_name: str | None = None, full_page: bool = False) -> Path:
    """Save ``test-artifacts/screenshots/<name>.png``; also ``docs/img/<docs_name>`` when asked to."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if docs_name and os.environ.get("IEP_UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / docs_name)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- the workspace and the servers ----------------------------------------------------------------


@dataclass
class Workspace:
    root: Path
    airflow_home: Path
    data_dir: Path
    env: dict[str, str] = field(repr=False)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    """A throw-away AIRFLOW_HOME and pipeline workspace, and the environment every process gets."""
    root = tmp_path_factory.mktemp("e2e")
    home, data = root / "airflow", root / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "IEP_", "MLFLOW_")) and k != "AIRFLOW_HOME"}
    env.update({
        "AIRFLOW_HOME": str(home),
        "IEP_DATA_DIR": str(data),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # only what a test triggers runs (unpausing a cron DAG would otherwise start its latest interval)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    })
    return Workspace(root, home, data, env)


@dataclass
class Stack:
    airflow: servers.Server
    mlflow: servers.Server


@pytest.fixture(scope="session")
def stack(workspace) -> Stack:
    """Airflow and MLflow, started together (each in its own session), stopped with SIGINT at the end."""
    started = time.monotonic()
    mlflow = servers.start_mlflow(env=workspace.env, wait=False,
                                  log_path=workspace.root / "servers-mlflow.log")
    airflow = servers.start_airflow(home=workspace.airflow_home, env=workspace.env, wait=False,
                                    timeout=SERVER_START_TIMEOUT, log_path=workspace.root / "servers-airflow.log")
    try:
        airflow.wait_ready(SERVER_START_TIMEOUT)
        mlflow.wait_ready(SERVER_START_TIMEOUT)
    except RuntimeError as exc:
        for server in (airflow, mlflow):
            server.stop()
        pytest.fail(f"the servers did not start: {exc}", pytrace=False)
    print(f"\n[e2e] Airflow {airflow.url} and MLflow {mlflow.url} up in {time.monotonic() - started:.0f}s")
    yield Stack(airflow, mlflow)
    left = {}
    for server in (airflow, mlflow):
        stopping = time.monotonic()
        server.stop(signal.SIGINT)  # what Ctrl-C on `make airflow` / `make mlflow` does
        print(f"[e2e] {server.name} stopped in {time.monotonic() - stopping:.0f}s")
        if server.leftovers():
            left[server.name] = server.leftovers()
    assert not left, f"processes left after stopping the servers (orphans): {left}"


@pytest.fixture(scope="session")
def airflow(stack) -> servers.Server:
    return stack.airflow


@pytest.fixture(scope="session")
def mlflow(stack) -> servers.Server:
    return stack.mlflow


# --- Airflow's REST API (what the UI itself calls) --------------------------------------------------


class AirflowAPI:
    """A small client of the Airflow 3 REST API with the admin's bearer token."""

    def __init__(self, server: servers.Server):
        self.url = server.url
        body = self._call("POST", "/auth/token", {"username": server.username, "password": server.password})
        self.token = body["access_token"]

    def _call(self, method: str, path: str, payload: dict | None = None, token: str | None = None):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=60) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip().startswith(("{", "[")) else text

    def get(self, path: str, **params):
        query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        return self._call("GET", path + query, token=self.token)

    def trigger(self, dag_id: str, run_id: str, conf: dict | None = None) -> None:
        """Unpause ``dag_id`` and start a manual run of it through the REST API."""
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token=self.token)
        self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                   {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}, token=self.token)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> tuple[str, float]:
        """Poll a run until it ends; returns its state and the seconds waited (fails the test on timeout)."""
        started = time.monotonic()
        quoted = urllib.parse.quote(run_id)
        state = "queued"
        while state not in ("success", "failed"):
            if time.monotonic() - started > timeout:
                pytest.fail(f"{dag_id} run {run_id} still {state} after {timeout}s:\n"
                            f"{self.task_failures(dag_id, run_id)}", pytrace=False)
            time.sleep(5)
            try:
                state = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"]
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # the run appears once the trigger request is through
                    raise
        return state, time.monotonic() - started

    def task_failures(self, dag_id: str, run_id: str) -> str:
        """The failed tasks of a run with the end of each one's log, to explain a failed run."""
        lines = []
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances")
        for ti in tis.get("task_instances", []):
            if ti["state"] not in ("failed", "upstream_failed", "up_for_retry"):
                continue
            lines.append(f"- {ti['task_id']}: {ti['state']}")
            if ti["state"] == "upstream_failed":
                continue
            try:
                log = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
                               f"{ti['task_id']}/logs/{max(ti.get('try_number') or 1, 1)}", full_content="true")
                content = log.get("content") if isinstance(log, dict) else log
                entries = content if isinstance(content, list) else [content]
                lines.append("\n".join(_log_line(e) for e in entries)[-4000:])
            except (urllib.error.URLError, ValueError, KeyError) as exc:
                lines.append(f"  (log unavailable: {exc})")
        return "\n".join(lines)


def _log_line(entry) -> str:
    """One entry of Airflow 3's structured task log, with the exception and where it was raised."""
    if not isinstance(entry, dict):
        return str(entry)
    line = str(entry.get("event", ""))
    for error in entry.get("error_detail") or []:
        frames = [f"{f['filename']}:{f['lineno']} {f['name']}" for f in error.get("frames", [])[-4:]]
        line += f"\n  {error.get('exc_type')}: {error.get('exc_value')}\n    " + "\n    ".join(frames)
    return line


@pytest.fixture(scope="session")
def airflow_api(airflow) -> AirflowAPI:
    return AirflowAPI(airflow)


@pytest.fixture(scope="session")
def project_dags(airflow_api) -> dict[str, dict]:
    """Wait until the dag-processor has parsed the project's DAGs; returns them by dag_id."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        dags = {d["dag_id"]: d for d in airflow_api.get("/api/v2/dags", limit=100)["dags"]}
        errors = airflow_api.get("/api/v2/importErrors")
        if set(PROJECT_DAGS) <= set(dags) or errors.get("total_entries"):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"DAGs not parsed after {SERVER_START_TIMEOUT}s; have {sorted(dags)}", pytrace=False)
        time.sleep(3)
    if errors.get("total_entries"):
        details = "\n".join(f"{e['filename']}:\n{e['stack_trace'][-1500:]}" for e in errors["import_errors"])
        pytest.fail(f"DAG import errors in the real dag-processor:\n{details}", pytrace=False)
    return dags


# --- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile (one per session)."""
    if not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: the browser tests need Debian's package. "
                    f"Install it with `bash scripts/install_browser.sh` (or apt-get install chromium).",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 900}, timeout=UI_TIMEOUT_MS)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.set_default_navigation_timeout(UI_TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser, request):
    page = browser.new_page()
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        try:
            screenshot(page, f"FAILED-{request.node.name}", full_page=True)
        except Exception:  # noqa: BLE001 - best effort, the test already failed
            pass
    page.close()


def airflow_login(page, airflow: servers.Server, path: str = "/") -> None:
    """Sign in through the UI's login form (simple auth manager), landing on ``path``."""
    page.context.clear_cookies()  # the browser is shared by the session: always start signed out
    page.goto(airflow.url + path)
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill(airflow.username)
    page.get_by_label("Password").fill(airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


# --- the data and the training run ----------------------------------------------------------------


def _run_step(args: list[str], env: dict[str, str], log: Path) -> None:
    started = time.monotonic()
    with log.open("a") as handle:
        handle.write(f"\n$ python -m ml_tasks {' '.join(args)}\n")
        handle.flush()
        proc = subprocess.run([sys.executable, "-m", "ml_tasks", *args], env=env, cwd=REPO,
                              stdout=handle, stderr=subprocess.STDOUT, timeout=DATA_STEP_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"`python -m ml_tasks {' '.join(args)}` failed (exit {proc.returncode}); the pipeline "
                    f"is not runnable:\n{log.read_text()[-4000:]}", pytrace=False)
    print(f"[e2e] ml_tasks {args[0]}: {time.monotonic() - started:.0f}s")


@pytest.fixture(scope="session")
def pipeline_data(workspace, stack) -> Path:
    """The small synthetic data set, loaded and built into the ML tables (what the train DAG reads).

    Runs after the servers are up, so that the dbt manifest the dag-processor reads is not being
    rewritten while it parses.
    """
    log = workspace.root / "pipeline-data.log"
    _run_step(["generate", *DATA_ARGS], workspace.env, log)
    _run_step(["ingest"], workspace.env, log)
    _run_step(["build"], workspace.env, log)
    return workspace.data_dir


@dataclass
class TrainedRun:
    dag_id: str
    run_id: str
    state: str
    seconds: float


@pytest.fixture(scope="session")
def trained_run(airflow, airflow_api, project_dags, pipeline_data, browser) -> TrainedRun:
    """``train_interest_model`` triggered through the UI's trigger form; waits for the run to finish."""
    dag_id = "train_interest_model"
    run_id = f"e2e__{time.strftime('%Y%m%dT%H%M%S')}"
    page = browser.new_page()
    try:
        airflow_login(page, airflow, f"/dags/{dag_id}")
        page.get_by_role("button", name="Trigger").first.click()
        form = page.get_by_role("dialog")
        form.get_by_text("Maximum LSTM epochs", exact=False).wait_for()  # params are typed and described
        form.locator("input[name=element_epochs]").fill("2")
        screenshot(page, "airflow-trigger-form", "airflow-trigger.png")
        form.get_by_text("Advanced Options", exact=True).click()
        form.locator("input[name=dagRunId]").fill(run_id)
        form.get_by_role("button", name="Trigger", exact=True).click()
        form.wait_for(state="hidden")
    finally:
        page.close()
    state, seconds = airflow_api.wait_for_run(dag_id, run_id, DAG_RUN_TIMEOUT)
    print(f"[e2e] {dag_id} run {run_id}: {state} in {seconds:.0f}s")
    if state != "success":
        pytest.fail(f"{dag_id} run {run_id} {state}:\n{airflow_api.task_failures(dag_id, run_id)}",
                    pytrace=False)
    return TrainedRun(dag_id, run_id, state, seconds)
