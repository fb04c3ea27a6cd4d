"""Fixtures of the stack tests: the scale-out stack of ``make stack`` started once, the pipeline run on it.

One session starts ``python -m devstack stack`` (``devstack.harness.start_stack``) on free 127.0.0.1 ports in
a temporary folder: PostgreSQL, Redis, MLflow with basic auth and served artifacts, Airflow's api-server,
scheduler, dag-processor and triggerer, and two Celery workers (``worker-1``, ``worker-2``, one task slot
each, so two tasks run at once, one per worker). At the end it is stopped the way Ctrl-C stops it, and the
session fails if any process it started is left.

What runs on it, in this order, each step through the scheduler and the workers:

1. ``switched_on``: the four DAGs are parsed; ``train_interest_model`` and ``update_interest_model`` are
   switched on while the warehouse is still empty, so the catch-up run Airflow starts for a cron DAG's
   latest interval when it is unpaused ends at once (failed: no warehouse yet) instead of training later.
2. ``first_runs``: a synthetic log file (150 users, 8 days) is dropped into the landing folder and
   ``ingest_events`` and ``build_warehouse`` are switched on. The ingest's catch-up run loads the file; the
   assets schedule ``build_warehouse`` and then ``update_interest_model`` (no champion yet: it trains one
   and scores). As the update starts, ``train_interest_model`` is triggered through the REST API with the
   admin login (epochs 1) and a crash is armed in its ``register_model`` (``faults/sitecustomize.py``): the
   two runs overlap and both evaluate against "no champion". While the training run's ``fit_model`` runs,
   the worker running it is killed with ``kill -9`` (its whole process tree, as when a machine is lost).
3. ``nothing_new_run``: ``update_interest_model`` triggered again with no new data; while its
   ``refresh_warehouse`` writes the warehouse, ``ingest_events`` is triggered (a second warehouse writer)
   and a reader outside Airflow opens the warehouse.

Data and budgets are small (horizon 24 h) so that the whole suite runs in about ten minutes on 2 cores.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack import harness
from devstack.env import SETTINGS
from devstack.hostname import WORKER_HOSTNAME_ENV
from devstack.supervisor import descendants, signal_all
from tests.stack.airflow_api import AirflowAPI

REPO = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).resolve().parent / "faults"
ARTIFACTS = REPO / "test-artifacts" / "stack"
PROJECT_DAGS = ("ingest_events", "build_warehouse", "train_interest_model", "update_interest_model")
WORKERS = ("worker-1", "worker-2")
DATA_ARGS = ["--users", "150", "--days", "8", "--seed", "11"]
HORIZON_HOURS = "24"
TRAIN_CONF = {"epochs": 1, "max_train_sequences": 300, "seed": 7}
#: a task whose worker vanished is failed (then retried) after this many seconds without a heartbeat
HEARTBEAT_TIMEOUT_S = 30
START_TIMEOUT = 900
RUN_TIMEOUT = 900


@dataclass
class StackSession:
    server: harness.StackServer
    api: AirflowAPI
    root: Path
    faults: Path
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.state["data_dir"])

    @contextlib.contextmanager
    def pipeline(self) -> Iterator:
        """This process as a client of the stack (its workspace, MLflow with the pipeline's account) for the
        block; yields ``ml_tasks.config.Paths``."""
        from ml_tasks.config import Paths

        saved = dict(os.environ)
        for key in [k for k in os.environ if k.startswith(("IEP_", "MLFLOW_"))]:
            del os.environ[key]
        os.environ.update(self.server.client_env({}))
        try:
            yield Paths.from_env()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def ml_tasks(self, *args: str, timeout: float = 600) -> dict:
        """``python -m ml_tasks ARGS`` against the stack; its JSON line."""
        env = self.server.client_env({**os.environ, "IEP_HORIZON_HOURS": HORIZON_HOURS, "CUDA_VISIBLE_DEVICES": ""})
        proc = subprocess.run([sys.executable, "-m", "ml_tasks", *args], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"python -m ml_tasks {' '.join(args)}: {proc.stderr[-3000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def worker_processes(self, name: str) -> list[int]:
        """The Celery worker ``name``'s main process (a child of the stack's supervisor)."""
        supervisor = self.server.state["pid"]
        found = []
        for pid in descendants(supervisor):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                parent = int(stat[stat.rindex(")") + 2:].split()[1])
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if parent == supervisor and (f"{WORKER_HOSTNAME_ENV}={name}".encode() in environ
                                             or f"--celery-hostname {name} ".encode() in cmdline + b" "):
                    found.append(pid)
        return found

    def kill_worker(self, name: str) -> list[int]:
        """``kill -9`` of worker ``name`` and every process below it (the task too: a lost machine)."""
        (main,) = self.worker_processes(name)
        victims = [main, *descendants(main)]
        signal_all(victims, signal.SIGKILL)
        return victims

    def query(self, sql: str, retry_for: float = 120.0) -> list[tuple]:
        """Rows of ``sql`` on the warehouse, read-only, waiting while a task holds the write lock."""
        from ml_tasks.data.warehouse import WarehouseError, read_only_connection

        deadline = time.monotonic() + retry_for
        while True:
            try:
                with read_only_connection(self.data_dir / "warehouse.duckdb") as con:
                    return con.execute(sql).fetchall()
            except WarehouseError as exc:  # a task is writing right now
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def serving_counts(self) -> dict[str, dict[str, int]]:
        """Rows and duplicated keys of every serving table (zero before the first scoring)."""
        keys = {"user_interest_scores": "user_id, category_id, model_version, scored_at",
                "user_interest_trajectory": "user_id, cutoff_at, model_version, scored_at",
                "user_interest_shifts": "user_id, model_version, scored_at",
                "scoring_runs": "model_version, scored_at"}
        tables = {r[0] for r in self.query("select table_name from information_schema.tables "
                                           "where table_schema = 'serving'")}
        out = {}
        for table, key in keys.items():
            if table not in tables:
                out[table] = {"rows": 0, "duplicated_keys": 0}
                continue
            ((rows,),) = self.query(f"select count(*) from serving.{table}")  # noqa: S608 (constant)
            ((dups,),) = self.query(f"select count(*) from (select {key} from serving.{table} "  # noqa: S608
                                    "group by all having count(*) > 1)")
            out[table] = {"rows": int(rows), "duplicated_keys": int(dups)}
        return out

    def run_state(self, dag_id: str, run_id: str) -> dict:
        """The run folder's ``state.json`` (what the steps of one DAG run share)."""
        with self.pipeline() as paths:
            folder = paths.run_dir(dag_id, run_id)
        return {**json.loads((folder / "state.json").read_text()), "folder": str(folder)}

    def versions(self) -> dict[int, dict]:
        """Every version of user_interest_model: its tags and aliases."""
        from ml_tasks import tracking
        from ml_tasks.contracts import REGISTERED_MODEL_NAME

        with self.pipeline() as paths:
            found = tracking.client(paths).search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
            return {int(mv.version): {"tags": dict(mv.tags), "aliases": list(mv.aliases or []),
                                      "run_id": mv.run_id, "source": mv.source} for mv in found}

    def alias(self, name: str) -> int | None:
        from ml_tasks import tracking

        with self.pipeline() as paths:
            return tracking.alias_version(paths, name)


def _stack_env(faults: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "IEP_", "MLFLOW_")) and k != "AIRFLOW_HOME" and k not in SETTINGS}
    env.update({
        "IEP_HORIZON_HOURS": HORIZON_HOURS,
        "AIRFLOW_WORKERS": str(len(WORKERS)),
        "AIRFLOW_WORKER_CONCURRENCY": "1",  # one task per worker: a killed worker takes exactly one task
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        # the crash hook of test_register_model_retry_finds_its_version, inert until armed
        "PYTHONPATH": os.pathsep.join((str(FAULTS), str(REPO))),
        "IEP_STACK_FAULTS": str(faults),
    })
    return env


@pytest.fixture(scope="session")
def stack(request) -> Iterator[StackSession]:
    """The stack, started once; stopped with SIGINT at the end, when no process it started may be left."""
    root = Path(tempfile.mkdtemp(prefix="iep-stack-"))
    os.chmod(root, 0o711)  # PostgreSQL's OS user must reach the cluster below it
    faults = root / "faults"
    faults.mkdir()
    os.chmod(faults, 0o777)
    started = time.monotonic()
    try:
        server = harness.start_stack(root / "stack", env=_stack_env(faults), timeout=START_TIMEOUT,
                                     log_path=root / "stack.log")
    except RuntimeError as exc:
        pytest.fail(f"the stack did not start: {exc}", pytrace=False)
    session = StackSession(server, AirflowAPI(server.url, server.username, server.password), root, faults)
    session.timings["stack_start_s"] = round(time.monotonic() - started, 1)
    print(f"\n[stack] up in {session.timings['stack_start_s']:.0f}s: Airflow {server.url}, MLflow "
          f"{server.mlflow_url} ({root})")
    yield session
    stopping = time.monotonic()
    server.stop(signal.SIGINT)  # what Ctrl-C on `make stack` does
    session.timings["stack_stop_s"] = round(time.monotonic() - stopping, 1)
    left = server.left_behind  # what was still alive once the stack had exited (then killed)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps({"timings": session.timings, "notes": session.notes},
                                                       indent=1, default=str))
    print(f"\n[stack] stopped in {session.timings['stack_stop_s']:.0f}s; timings: {session.timings}")
    last_words = server.log_tail(2000)  # read before the folder holding the log is removed
    if request.session.testsfailed:
        shutil.copytree(root / "stack" / "logs", ARTIFACTS / "logs", dirs_exist_ok=True)
        shutil.copy(root / "stack.log", ARTIFACTS / "stack.log")
        print(f"[stack] kept {root} (logs also in {ARTIFACTS})")
    else:
        shutil.rmtree(root, ignore_errors=True)
    assert not left and not server.leftovers(), f"processes left after stopping the stack: {left}"
    assert "stopped (no process left: True)" in last_words, last_words


def _wait(predicate, timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout:.0f}s")
        time.sleep(every)


@pytest.fixture(scope="session")
def switched_on(stack) -> dict:
    """The DAGs parsed without import errors; train and update switched on before any data exists."""
    api = stack.api

    def parsed():
        dags = {d["dag_id"] for d in api.get("/api/v2/dags", limit=100)["dags"]}
        errors = api.get("/api/v2/importErrors")
        if errors.get("total_entries"):
            pytest.fail(f"DAG import errors: {errors['import_errors']}", pytrace=False)
        return set(PROJECT_DAGS) <= dags

    _wait(parsed, START_TIMEOUT, "the project's DAGs parsed")
    cron_dags = ("train_interest_model", "update_interest_model")
    for dag_id in cron_dags:
        api.unpause(dag_id)
    # the catch-up run of the latest interval, which unpausing starts, has nothing to work on: marked
    # failed at once (what an operator does in the UI), so that it does not retry into the data below
    for dag_id in cron_dags:
        run = _wait(lambda d=dag_id: next(iter(api.runs(d)), None), 120, f"the catch-up run of {dag_id}", every=0.5)
        api.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})
    staging = stack.root / "staging"
    generated = stack.ml_tasks("generate", *DATA_ARGS, "--out", str(staging))

    def catch_ups_ended():
        runs = {d: api.runs(d) for d in cron_dags}
        done = all(r and all(x["state"] in ("success", "failed") for x in r) for r in runs.values()) and all(
            ti["state"] not in ("running", "queued", "scheduled", "up_for_retry", "restarting")
            for d, rs in runs.items() for x in rs for ti in api.task_instances(d, x["dag_run_id"]).values())
        return runs if done else None

    catch_ups = _wait(catch_ups_ended, 300, "the catch-up runs of the cron DAGs")
    stack.notes["catch_up_runs"] = {d: [(r["dag_run_id"], r["run_type"], r["state"]) for r in rs]
                                    for d, rs in catch_ups.items()}
    return {"file": Path(generated["events_path"]), "n_events": generated["n_events"],
            "catch_ups": catch_ups}


def _new_run(api: AirflowAPI, dag_id: str, run_type: str, after: set[str], timeout: float) -> dict:
    """The first run of ``dag_id`` of ``run_type`` not in ``after``, once the scheduler has created it."""
    return _wait(lambda: next((r for r in api.runs(dag_id) if r["run_type"] == run_type
                               and r["dag_run_id"] not in after), None), timeout, f"a new {run_type} {dag_id} run")


@pytest.fixture(scope="session")
def first_runs(stack, switched_on) -> dict:
    """The landing file through ingest -> build -> update (assets), a training run triggered through the REST
    API overlapping the update, ``kill -9`` of the worker running its fit_model, a crash in its register_model."""
    api, record = stack.api, {}
    before = {d: {r["dag_run_id"] for r in api.runs(d)} for d in PROJECT_DAGS}
    landing = stack.data_dir / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    dropped = time.time()
    os.replace(switched_on["file"], landing / switched_on["file"].name)
    for dag_id in ("build_warehouse", "ingest_events"):
        api.unpause(dag_id)  # the ingest's catch-up run of the current hour picks the file up
    ingest = _new_run(api, "ingest_events", "scheduled", before["ingest_events"], 300)
    ingest = api.wait_run("ingest_events", ingest["dag_run_id"], RUN_TIMEOUT)
    build = _new_run(api, "build_warehouse", "asset_triggered", before["build_warehouse"], 300)
    build = api.wait_run("build_warehouse", build["dag_run_id"], RUN_TIMEOUT)
    assert build["state"] == "success", api.failures("build_warehouse", build["dag_run_id"])

    train_id = f"stack_train__{time.strftime('%Y%m%dT%H%M%S')}"
    (stack.faults / "crash_before_alias.json").write_text(json.dumps({"dag_id": "train_interest_model",
                                                                      "run_id": train_id}))
    update = _new_run(api, "update_interest_model", "asset_triggered", before["update_interest_model"], 300)
    api.trigger("train_interest_model", train_id, TRAIN_CONF)
    record.update(dropped=dropped, ingest=ingest, build=build, update_id=update["dag_run_id"], train_id=train_id)

    def fit_running():
        ti = api.task_instances("train_interest_model", train_id).get("fit_model") or {}
        return ti if ti.get("state") == "running" and ti.get("hostname") in WORKERS else None

    fit = _wait(fit_running, 600, "fit_model running on a worker", every=0.5)
    record["killed_worker"] = fit["hostname"]
    record["killed_pids"] = stack.kill_worker(fit["hostname"])
    record["killed_at"] = time.time()
    record["serving_before_kill"] = stack.serving_counts()  # the killed task never wrote: as just before
    print(f"\n[stack] kill -9 of {fit['hostname']} (pids {record['killed_pids']}) during fit_model")

    record["update"] = api.wait_run("update_interest_model", record["update_id"], RUN_TIMEOUT)
    record["train"] = api.wait_run("train_interest_model", train_id, RUN_TIMEOUT)
    record["serving_after"] = stack.serving_counts()
    stack.timings["landing_to_update_end_s"] = round(
        _epoch(record["update"]["end_date"]) - dropped, 1)
    stack.timings["train_run_s"] = round(_epoch(record["train"]["end_date"]) - _epoch(record["train"]["start_date"]), 1)
    stack.notes["first_runs"] = {k: record[k] for k in ("update_id", "train_id", "killed_worker",
                                                        "serving_before_kill", "serving_after")}
    return record


@pytest.fixture(scope="session")
def nothing_new_run(stack, first_runs) -> dict:
    """An update with nothing new; while its refresh_warehouse writes, a second writer (ingest_events) and a
    reader outside Airflow."""
    from ml_tasks.data.warehouse import WarehouseError, read_only_connection

    api, record = stack.api, {}
    run_id = f"stack_nothing_new__{time.strftime('%Y%m%dT%H%M%S')}"
    second = f"stack_second_writer__{time.strftime('%Y%m%dT%H%M%S')}"
    record["versions_before"] = sorted(stack.versions())
    record["champion_before"] = stack.alias("champion")
    api.trigger("update_interest_model", run_id, {"epochs": 1})

    def refreshing():
        ti = api.task_instances("update_interest_model", run_id).get("refresh_warehouse") or {}
        if ti.get("state") in ("success", "failed"):
            pytest.fail(f"refresh_warehouse ended ({ti['state']}) before the test saw it running", pytrace=False)
        return ti if ti.get("state") == "running" else None

    _wait(refreshing, 600, "refresh_warehouse running", every=0.3)
    api.trigger("ingest_events", second)
    warehouse = stack.data_dir / "warehouse.duckdb"
    # read only once the writer holds the file: a read-only open in the second before dbt opens it would make
    # dbt fail on the lock and refresh_warehouse retry, and the second writer could take the slot in between
    polls = iter(range(10**9))
    _wait(lambda: _write_locked(warehouse) or (next(polls) % 20 == 19 and refreshing() is None), 300,
          "the warehouse write-locked", every=0.05)
    deadline = time.monotonic() + 300
    record["reader_error"] = None
    record["reader_opened_while_refresh_ran"] = 0
    while time.monotonic() < deadline and record["reader_error"] is None:
        try:
            with read_only_connection(warehouse) as con:
                con.execute("select count(*) from raw.events").fetchone()
            state = api.task_instances("update_interest_model", run_id)["refresh_warehouse"]["state"]
            if state != "running":
                break
            record["reader_opened_while_refresh_ran"] += 1
        except WarehouseError as exc:
            record["reader_error"] = str(exc)
        time.sleep(0.1)
    record["update_id"], record["second_id"] = run_id, second
    record["update"] = api.wait_run("update_interest_model", run_id, RUN_TIMEOUT)
    record["second"] = api.wait_run("ingest_events", second, RUN_TIMEOUT)
    stack.timings["nothing_new_update_s"] = round(
        _epoch(record["update"]["end_date"]) - _epoch(record["update"]["start_date"]), 1)
    return record


def _write_locked(path: Path) -> bool:
    """Whether a process holds DuckDB's write lock on ``path`` (Linux ``/proc/locks``; taking no lock to find out)."""
    try:
        inode = path.stat().st_ino
        return any(f":{inode} " in line and " WRITE " in line for line in Path("/proc/locks").read_text().splitlines())
    except OSError:
        return False


def _epoch(stamp: str) -> float:
    from tests.stack.airflow_api import when

    return when(stamp)


def mlflow_http(url: str, method: str = "GET", login: tuple[str, str] | None = None, payload: dict | None = None):
    """(status, headers, body) of one request to MLflow, with basic auth when ``login`` is given."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode(errors="replace")
