"""The evaluation protocol end to end on small synthetic data: report format, same users, drift follow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml_tasks.config import ModelConfig
from ml_tasks.contracts import ABLATION_NAME, BASELINE_NAMES, METRIC_NAMES, MODEL_NAME
from ml_tasks.data.synthetic import SyntheticConfig, generate
from ml_tasks.evaluation.compare import CI_METRICS
from ml_tasks.evaluation.protocol import cutoff_context, run_evaluation, tune_half_life
from ml_tasks.evaluation.switch_follow import truth_mismatch
from ml_tasks.experiments.switch_follow import switch_follow
from ml_tasks.model.dataset import ModelData
from ml_tasks.model.fit import fit

TINY = ModelConfig(
    embedding_dim=8,
    lstm_units=(16, 16),
    epochs=2,
    batch_size=64,
    learning_rate=1e-2,
    n_popular_candidates=5,
    top_k_candidates=5,
)


@pytest.fixture(scope="module")
def synthetic():
    events, truth = generate(
        SyntheticConfig(
            n_users=150,
            n_categories=16,
            n_items=200,
            days=10,
            seed=11,
            frac_switch=0.5,
            frac_stable=0.25,
            frac_drift=0.25,
        )
    )
    return ModelData.from_events(events, horizon_hours=24, cutoff_step_hours=12, sequence_length=20), truth


def test_cutoff_context_follows_the_protocol(synthetic):
    data, _ = synthetic
    ev = data.events
    ctx = cutoff_context(ev, data.test_cutoff_ts, data.horizon_hours)
    before = ev[ev["event_ts"] < ctx.cutoff_ts]
    window = ev[(ev["event_ts"] >= ctx.cutoff_ts) & (ev["event_ts"] < ctx.cutoff_ts + 24 * 3600)]
    assert set(ctx.users) == set(before["user_id"]) & set(window["user_id"])
    assert set(ctx.candidates) == set(before["category_idx"])
    for user, rel in zip(ctx.users, ctx.relevant, strict=True):
        assert set(rel) == set(window.loc[window["user_id"] == user, "category_idx"])


def test_half_life_is_chosen_on_the_validation_cutoff(synthetic):
    data, _ = synthetic
    best, curve = tune_half_life(data, (6.0, 72.0, 336.0))
    assert best in curve and curve[best] == max(curve.values())


def test_report_format_and_same_users(synthetic):
    data, _ = synthetic
    report = run_evaluation(data, TINY, seeds=(0,), dataset="tiny")
    json.dumps(report)  # JSON-safe
    assert report["dataset"] == "tiny"
    proto = report["protocol"]
    assert proto["n_eval_users"] == len(cutoff_context(data.events, data.test_cutoff_ts, 24).users)
    assert proto["n_categories"] > 0 and proto["cutoff_ts"] == data.test_cutoff_ts
    results = report["results"]
    for name in (MODEL_NAME, ABLATION_NAME, *BASELINE_NAMES, "recency_decay_72h"):
        for metric in METRIC_NAMES:
            assert 0.0 <= results[name][metric] <= 1.0, (name, metric)
        assert results[name]["n_users"] == proto["n_eval_users"]
    assert "ndcg@10_std" in results[MODEL_NAME] and "ndcg@10_explore" in results[MODEL_NAME]
    for name in (MODEL_NAME, ABLATION_NAME, *BASELINE_NAMES):
        for metric in CI_METRICS:
            lo, hi = results[name][f"{metric}_ci95"]
            assert lo <= results[name][metric] <= hi, (name, metric)
        assert 0 < results[name]["n_users_discover"] <= proto["n_eval_users"]
    comps = report["comparisons"]
    assert set(comps) == {f"{p}{MODEL_NAME}/{other}" for p in ("", "discover:")
                          for other in ("best_baseline", ABLATION_NAME)}
    for key, comp in comps.items():
        assert comp["metric"] == ("ndcg@10_discover" if key.startswith("discover:") else "ndcg@10")
        assert comp["ci95"][0] <= comp["ratio"] <= comp["ci95"][1] and comp["verdict"]
    best = comps[f"{MODEL_NAME}/best_baseline"]["baseline"]
    assert best == max(BASELINE_NAMES, key=lambda n: results[n]["ndcg@10"])
    assert comps[f"{MODEL_NAME}/best_baseline"]["ratio"] == pytest.approx(
        results[MODEL_NAME]["ndcg@10"] / results[best]["ndcg@10"])
    assert report["ci_method"].startswith("paired bootstrap over users, 1000 resamples, seed 0")
    assert report["half_life_hours"] in TINY.half_life_grid
    # learned models beat popularity on planted interests
    assert results[MODEL_NAME]["ndcg@10"] > results["popularity"]["ndcg@10"]


def test_switch_follow_measures_every_method(synthetic):
    data, truth = synthetic
    model = fit(data, TINY, final=False)
    out = switch_follow(model, data, truth, max_events=6)
    assert out["n_users_followed"] > 0 and 0 < out["n_users_discover_followed"] <= out["n_users_followed"]
    for name in (MODEL_NAME, ABLATION_NAME, *BASELINE_NAMES):
        for kind, curve in (("", "share_following_by_event"), ("_discover", "share_named_by_event_discover")):
            stats = out[f"events_to_follow{kind}"][name]
            assert 0 <= stats["median"] <= 7 and 0.0 <= stats["share_within_max"] <= 1.0
            share = out[curve][name]
            assert len(share) == 7 and all(0.0 <= s <= 1.0 for s in share if not np.isnan(s))
            assert 0.0 <= out[f"ndcg@10{kind}_after_switch"][name] <= 1.0
        named = out["share_named_by_event_discover"][name]
        assert named == sorted(named) and named[-1] == pytest.approx(
            out["events_to_follow_discover"][name]["share_within_max"])
    # on discover, the methods that cannot score a new category all follow popularity
    for name in ("user_frequency", "recency_decay", "last_category"):
        assert out["events_to_follow_discover"][name] == out["events_to_follow_discover"]["popularity"]
    # a static profile needs the longest to notice a switch
    assert (
        out["events_to_follow"]["user_frequency"]["mean"] >= out["events_to_follow"]["last_category"]["mean"]
    )


def test_a_truth_file_of_other_data_is_recognised(synthetic):
    data, truth = synthetic
    assert truth_mismatch(truth, data) is None
    _, other = generate(SyntheticConfig(n_users=150, n_categories=16, n_items=200, days=10, seed=12,
                                        frac_switch=0.5, frac_stable=0.25, frac_drift=0.25))
    assert "switch users touch their new top category" in truth_mismatch(other, data)
    assert "not in the truth file" in truth_mismatch(other.assign(user_id="x" + other["user_id"]), data)


@pytest.mark.slow
def test_evaluate_cli_end_to_end_on_a_file(tmp_path):
    """``python -m ml_tasks evaluate``: ingest -> dbt build -> fit -> report in a temporary workspace,
    each method an MLflow run with the same metric names; a small test window is flagged."""
    import os
    import subprocess
    import sys

    from ml_tasks.data.synthetic import write
    from tests.conftest import REPO

    written = write(SyntheticConfig(n_users=25, n_categories=12, n_items=100, days=8, seed=3), tmp_path / "src")
    env = {**os.environ, "IEP_DATA_DIR": str(tmp_path / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "ml_tasks", "evaluate", "--events", written["events_path"], "--format", "generic",
         "--horizon-days", "1", "--seeds", "1", "--epochs", "1", "--set", "copy_head=true",
         "--out", str(tmp_path / "report.json")],
        env=env, capture_output=True, text=True, timeout=1200, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["copy_head"] is True  # --set reached the model
    n = report["protocol"]["n_eval_users"]
    assert 0 < n < 30 and line["n_eval_users"] == n
    assert line["warnings"] == report["warnings"] and "noise" in report["warnings"][0]
    assert report["ingest"]["rows_loaded"] == report["ingest"]["rows_read"] > 0
    methods = {MODEL_NAME, ABLATION_NAME, *BASELINE_NAMES}
    assert methods <= set(report["results"])
    assert {report["results"][m]["n_users"] for m in methods} == {n}

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    evals = {r.info.run_name: r for r in runs if (r.info.run_name or "").startswith("eval:")}
    assert {f"eval:{m}" for m in methods} <= set(evals)
    # the same metric names for every method (the learned ones add a ``_std`` over seeds)
    keys = {frozenset(k for k in r.data.metrics if k.split("_")[0] in ("ndcg", "recall", "mrr") and
                      not k.endswith("_std")) for r in evals.values()}
    assert len(keys) == 1 and {"ndcg_at_10", "recall_at_10", "mrr"} <= next(iter(keys))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("copy_head=yes", "model setting copy_head takes bool, got 'yes'"),
        ("lstm_unit=[8]", "unknown model setting 'lstm_unit'"),
        ("epochs=1.5", "model setting epochs takes int"),
        ("epochs", "--set expects NAME=VALUE"),
    ],
)
def test_a_bad_model_setting_is_one_line_and_exit_2(tmp_path, capsys, setting, message):
    from ml_tasks.cli import main

    rc = main(["--data-dir", str(tmp_path), "evaluate", "--events", str(tmp_path / "none.csv"),
               "--out", str(tmp_path / "r.json"), "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "r.json").exists()


def test_model_settings_are_parsed_to_the_fields_types():
    from ml_tasks.config import parse_model_overrides

    got = parse_model_overrides(
        ["copy_head=true", "window_loss_weight=1", "lstm_units=[32, 32]", "next_positions=null",
         "early_stopping_monitor=val_window_loss", "lstm_features=[\"head\"]"]
    )
    assert got == {"copy_head": True, "window_loss_weight": 1.0, "lstm_units": (32, 32), "next_positions": None,
                   "early_stopping_monitor": "val_window_loss", "lstm_features": ("head",)}
    assert isinstance(got["window_loss_weight"], float)
