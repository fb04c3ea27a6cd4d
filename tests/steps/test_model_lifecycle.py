"""The model's life in the registry: champion gate, a degraded challenger, rollback, idempotent reruns,
and the pyfunc model loading by alias in a fresh process. Real DuckDB, dbt, TensorFlow and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml_tasks.errors import PipelineError
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small synthetic warehouse and one trained, registered, scored champion (v1)."""
    from ml_tasks import pipelines
    from ml_tasks.config import Paths
    from ml_tasks.steps import data as data_step

    root = tmp_path_factory.mktemp("lifecycle")
    mp = pytest.MonkeyPatch()
    mp.setenv("IEP_DATA_DIR", str(root))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("IEP_HORIZON_HOURS", "24")
    paths = Paths.from_env()
    data_step.generate(paths, users=200, days=8, seed=11)
    data_step.ingest(paths, None)
    data_step.build(paths)
    result = pipelines.train(paths, overrides={"epochs": 1, "seed": 0})
    yield paths, result
    mp.undo()


def _count(warehouse, table):
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(f"select count(*) from serving.{table}").fetchone()[0]
    finally:
        con.close()


def test_first_model_becomes_champion_and_scores_users(trained):
    from ml_tasks import tracking
    from ml_tasks.steps import status as status_step

    paths, result = trained
    assert result["register_model"]["promoted"] is True and result["register_model"]["version"] == 1
    assert tracking.alias_version(paths, tracking.CHAMPION) == 1
    status = status_step.status(paths)
    assert status["champion_version"] == 1
    assert status["n_scored_users"] == result["score_users"]["n_scored_users"] > 0
    assert 0 < status["champion_metrics"]["ndcg@10"] <= 1


def test_scoring_rerun_adds_no_rows(trained):
    from ml_tasks.data import serving_store
    from ml_tasks.steps import score as score_step

    paths, _ = trained
    tables = (*serving_store.TABLES[:3], "user_discover_scores")
    before = [_count(paths.warehouse, t) for t in tables]
    assert before[-1] > 0  # the discover list is written beside the overall one
    score_step.score_users(paths)
    assert [_count(paths.warehouse, t) for t in tables] == before


def test_registration_is_idempotent_per_run(trained):
    from ml_tasks import tracking
    from ml_tasks.steps import register

    paths, result = trained
    run_dir = __import__("pathlib").Path(result["start_training"]["run_dir"])
    again = register.register_model(paths, run_dir)
    assert again["version"] == 1
    versions = tracking.client(paths).search_model_versions("name='user_interest_model'")
    assert len(versions) == 1


def test_degraded_challenger_is_never_promoted(trained, tmp_path):
    """A model fitted on shuffled labels must lose the gate and only get the challenger alias."""
    from ml_tasks import tracking
    from ml_tasks.model.dataset import ModelData
    from ml_tasks.model.fit import fit
    from ml_tasks.steps import evaluate as evaluate_step
    from ml_tasks.steps import register, train

    paths, _ = trained
    data = ModelData.from_dir(paths.export_dir)
    rng = np.random.default_rng(0)
    seqs = data.sequences.copy()
    perm = rng.permutation(len(seqs))
    for col in ("label_category_idx", "label_event_counts"):
        seqs[col] = seqs[col].to_numpy()[perm]
    shuffled = replace(data, sequences=seqs)
    champion_config = tracking.load_fitted_model(paths, 1).config
    bad = fit(shuffled, replace(champion_config, seed=5), final=True, epochs=1)
    run_dir = tmp_path / "degraded"
    train.start_training(paths, run_dir, kind="degraded_test")
    bad.save(run_dir / "model")
    evaluate_step.evaluate(paths, run_dir)
    decision = register.register_model(paths, run_dir, margin=0.0)
    assert decision["promoted"] is False, decision
    assert tracking.alias_version(paths, tracking.CHAMPION) == 1
    assert tracking.alias_version(paths, tracking.CHALLENGER) == decision["version"]
    assert decision["candidate_ndcg@10"] < decision["champion_ndcg@10"]


def test_rollback_points_champion_at_an_earlier_version(trained):
    from ml_tasks import tracking
    from ml_tasks.steps import register

    paths, _ = trained
    latest = max(int(v.version) for v in tracking.client(paths).search_model_versions("name='user_interest_model'"))
    assert latest >= 2
    register.promote(paths, latest, reason="test promotion")
    assert tracking.alias_version(paths, tracking.CHAMPION) == latest
    assert tracking.alias_version(paths, tracking.CHALLENGER) == 1
    rolled = register.promote(paths, 1, reason="rollback")
    assert rolled["changed"] and rolled["champion_before"] == latest
    assert tracking.alias_version(paths, tracking.CHAMPION) == 1
    assert register.promote(paths, 1)["changed"] is False  # idempotent
    with pytest.raises(PipelineError, match="does not exist"):
        register.promote(paths, 99)


def test_promote_cli_reports_a_missing_version_in_one_line(trained):
    paths, _ = trained
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "ml_tasks", "promote", "--version", "42"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "error: model version 42 of user_interest_model does not exist"


def test_pyfunc_model_loads_by_alias_in_a_fresh_process(trained):
    paths, _ = trained
    code = """
import json, mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/user_interest_model@champion")
events = pd.DataFrame({"user_id": ["a"] * 4 + ["b"] * 2,
                       "category_id": ["c001", "c002", "c001", "c003", "c004", "c004"],
                       "event_type": ["view", "view", "cart", "view", "view", "buy"],
                       "event_ts": [1767225600, 1767229200, 1767232800, 1767236400, 1767240000, 1767243600]})
out = model.predict(events, params={"top_n": 5})
disc = model.predict(events, params={"top_n": 5, "ranking": "discover"})
touched = events.groupby("user_id")["category_id"].apply(set)
print(json.dumps({"columns": list(out.columns), "users": sorted(out.user_id.unique()),
                  "ranks": out.groupby("user_id")["rank"].apply(list).to_dict(),
                  "scores_sorted": bool(all((g.score.diff().dropna() <= 1e-12).all() for _, g in out.groupby("user_id"))),
                  "discover_columns": list(disc.columns),
                  "discover_ranks": disc.groupby("user_id")["rank"].apply(list).to_dict(),
                  "discover_touched": int(sum(c in touched[u] for u, c in zip(disc.user_id, disc.category_id)))}))
"""
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": paths.tracking_uri}
    env.pop("PYTHONPATH", None)  # the model carries its own code
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                         cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["columns"] == ["user_id", "category_id", "score", "rank"]
    assert result["users"] == ["a", "b"]
    assert result["ranks"] == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}
    assert result["scores_sorted"]
    # the discover list: the same columns, never a category the user already touched
    assert result["discover_columns"] == result["columns"]
    assert result["discover_ranks"] == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}
    assert result["discover_touched"] == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_champion_is_servable_with_mlflow_models_serve(trained):
    """``make serve`` (``mlflow models serve`` of the alias) answers /invocations with ranked categories."""
    import os
    import time
    import urllib.error
    import urllib.request

    paths, _ = trained
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": paths.tracking_uri}
    env.pop("PYTHONPATH", None)  # the model carries its own code
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "model", "--port", str(port)],
        env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 240 s"
            time.sleep(1)
        payload = {
            "dataframe_split": {
                "columns": ["user_id", "category_id", "event_type", "event_ts"],
                "data": [["a", "c001", "view", 1767225600], ["a", "c002", "cart", 1767229200],
                         ["b", "c004", "view", 1767240000]],
            },
            "params": {"top_n": 3},
        }
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            body = json.loads(r.read())
        rows = body["predictions"]
        by_user: dict[str, list[int]] = {}
        for row in rows:
            by_user.setdefault(row["user_id"], []).append(row["rank"])
        assert by_user == {"a": [1, 2, 3], "b": [1, 2, 3]}
        assert all(isinstance(row["category_id"], str) and np.isfinite(row["score"]) for row in rows)
        # a malformed request is a client error with a message, not a crash of the server
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps({"dataframe_split": {"columns": ["user_id"], "data": [["a"]]}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)
        assert 400 <= err.value.code < 600
        assert proc.poll() is None
    finally:
        import signal

        proc.send_signal(signal.SIGINT)  # Ctrl-C: the launcher stops the server and exits 0
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, proc.stdout.read()[-3000:]


def _candidate_run(paths, trained_result, tmp_path, name: str):
    """A new run folder holding a copy of the champion's fitted model, evaluated against the champion."""
    import shutil
    from pathlib import Path

    from ml_tasks.steps import evaluate as evaluate_step
    from ml_tasks.steps import train

    run_dir = tmp_path / name
    train.start_training(paths, run_dir, kind=name)
    shutil.copytree(Path(trained_result["start_training"]["run_dir"]) / "model", run_dir / "model")
    evaluate_step.evaluate(paths, run_dir)
    return run_dir


def _n_versions(paths) -> int:
    from ml_tasks import tracking

    return len(tracking.client(paths).search_model_versions("name='user_interest_model'"))


def test_register_retried_after_a_crash_between_registering_and_aliasing(trained, tmp_path, monkeypatch):
    """The retry finds the version the crashed attempt registered and registers no second one."""
    from ml_tasks import tracking
    from ml_tasks.steps import register
    from ml_tasks.steps.state import read_state

    paths, result = trained
    run_dir = _candidate_run(paths, result, tmp_path, "crash_test")
    before = _n_versions(paths)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(tracking, "set_version_tags", crash)
    with pytest.raises(KeyboardInterrupt):
        register.register_model(paths, run_dir, margin=0.5)
    monkeypatch.undo()
    assert _n_versions(paths) == before + 1
    registered = read_state(run_dir)["registered_version"]  # recorded right after registration
    # a crash before even the state was written: the version is found by its run_dir tag
    state = json.loads((run_dir / "state.json").read_text())
    state.pop("registered_version")
    (run_dir / "state.json").write_text(json.dumps(state))
    decision = register.register_model(paths, run_dir, margin=0.5)
    assert decision["version"] == registered and _n_versions(paths) == before + 1
    assert register.register_model(paths, run_dir, margin=0.5) == decision  # and once more: nothing new


def test_gate_refuses_a_decision_taken_against_a_champion_that_has_since_changed(trained, tmp_path):
    from ml_tasks import tracking
    from ml_tasks.steps import register

    paths, result = trained
    champion = tracking.alias_version(paths, tracking.CHAMPION)
    run_dir = _candidate_run(paths, result, tmp_path, "stale_test")  # evaluated against `champion`
    other = max(int(v.version) for v in tracking.client(paths).search_model_versions("name='user_interest_model'")
                if int(v.version) != champion)
    register.promote(paths, other, reason="another run promoted meanwhile")
    try:
        decision = register.register_model(paths, run_dir, margin=-1.0)  # would promote against `champion`
        assert decision["promoted"] is False and decision["reason"].startswith("refused"), decision
        assert tracking.alias_version(paths, tracking.CHAMPION) == other
        assert tracking.version_info(paths, decision["version"])["tags"]["gate_decision"] == "refused"
        assert decision["version"] not in (tracking.alias_version(paths, tracking.CHAMPION),
                                           tracking.alias_version(paths, tracking.CHALLENGER))
    finally:
        register.promote(paths, champion, reason="restore the champion of the other tests")


def test_a_version_whose_files_changed_is_refused_before_unpickling(trained, monkeypatch):
    import urllib.parse
    from pathlib import Path

    import mlflow

    from ml_tasks import tracking

    paths, _ = trained
    champion = tracking.alias_version(paths, tracking.CHAMPION)
    client = tracking.client(paths)
    model_id = client.get_model_version("user_interest_model", str(champion)).source.removeprefix("models:/")
    stored = Path(urllib.parse.urlparse(client.get_logged_model(model_id).artifact_location).path)
    serving_json = next(stored.rglob("serving.json"))  # in the artifact store, as a writer of it would see it
    original = serving_json.read_bytes()
    serving_json.write_bytes(original.replace(b"horizon_hours", b"horizon_hourz"))

    def must_not_load(*args, **kwargs):
        raise AssertionError("a tampered model was loaded")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", must_not_load)
    try:
        with pytest.raises(tracking.RegistryError, match="files changed after registration"):
            tracking.load_fitted_model(paths, champion)
    finally:
        serving_json.write_bytes(original)
    monkeypatch.undo()
    assert tracking.load_fitted_model(paths, champion).n_components > 0  # intact again: loads


def test_training_run_with_background_events(trained, tmp_path):
    """The train DAG's ``background_events``: other users' events reach the LSTM's rows and the baselines'
    transition statistics of that run, are cut at the test cutoff, and are never evaluated."""
    import pandas as pd

    from ml_tasks import pipelines
    from ml_tasks.data import synthetic
    from ml_tasks.steps.state import read_state

    paths, _ = trained
    written = synthetic.write(synthetic.SyntheticConfig(n_users=80, days=8, seed=23), tmp_path / "bg")
    other = pd.read_csv(written["events_path"])
    other["user_id"] = "other-" + other["user_id"].astype(str)
    background = tmp_path / "other_users.csv"
    other.to_csv(background, index=False)

    run_dir = tmp_path / "with_background"
    for task_id, kwargs in (("start_training", {"overrides": {"epochs": 1, "seed": 0},
                                                "background": {"events": str(background), "format": "generic"}}),
                            ("fit_model", {}), ("extract_interest_features", {}), ("evaluate", {})):
        result = pipelines.run_step(pipelines.TRAIN_INTEREST_MODEL, task_id, paths, run_dir, **kwargs)
        if task_id == "fit_model":
            assert result["n_background_sequences"] > 0, result
    used = read_state(run_dir)["background"]
    assert used["used"] and used["rows_loaded"] == len(other) and used["users_used"] > 0, used
    assert used["events_used"] < len(other)  # events at or after the test cutoff were cut
    report = json.loads((run_dir / "report.json").read_text())
    assert report["background"]["used"] is True
    evaluated = report["results"]["lstm_pca_predictor"]["n_users"]
    plain = json.loads((Path(trained[1]["start_training"]["run_dir"]) / "report.json").read_text())
    assert evaluated == plain["results"]["lstm_pca_predictor"]["n_users"]  # the same users, none of theirs
