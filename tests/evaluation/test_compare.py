"""Paired bootstrap intervals over users, the comparisons of a report and their plain verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from ml_tasks.contracts import ABLATION_NAME, MODEL_NAME
from ml_tasks.evaluation.compare import (
    CI_METRICS,
    add_intervals,
    compare,
    comparison_fields,
    confidence,
    interval_metrics,
    resample_weights,
    verdict,
)
from ml_tasks.evaluation.metrics import mean_metrics

N = 300


def _tables(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.6, N)
    discover = np.where(rng.random(N) < 0.5, rng.uniform(0.0, 0.4, N), np.nan)  # half the users have one
    def table(overall, new):
        return {"ndcg@10": overall, "recall@10": overall, "mrr": overall,
                "ndcg@10_discover": new, "recall@10_discover": new, "mrr_discover": new}

    return {
        "weak": table(base * 0.5, discover * 0.5),
        "strong": table(base, discover),
        MODEL_NAME: table(base * 1.2, discover),
        ABLATION_NAME: table(base * 1.2 + rng.normal(0, 0.01, N), discover * 1.01),
    }


def test_a_method_against_itself_is_a_ratio_of_one_not_detectable():
    tables = _tables()
    w = resample_weights(N)
    assert w.shape == (1000, N) and (w.sum(axis=1) == N).all()
    same = compare(tables, "strong", "strong", "ndcg@10", w)
    assert same["ratio"] == pytest.approx(1.0)
    lo, hi = same["ci95"]
    assert lo <= 1.0 <= hi
    assert verdict(same, "strong").startswith("no difference detectable")


def test_a_clearly_better_method_has_an_interval_above_one():
    tables = _tables()
    w = resample_weights(N)
    better = compare(tables, "strong", "weak", "ndcg@10", w)
    assert better["ratio"] == pytest.approx(2.0) and better["ci95"][0] > 1.0
    worse = compare(tables, "weak", "strong", "ndcg@10_discover", w)
    assert worse["ci95"][1] < 1.0
    noisy = compare(tables, MODEL_NAME, ABLATION_NAME, "ndcg@10", w)
    assert noisy["ci95"][0] < 1.0 < noisy["ci95"][1]


def test_the_bootstrap_is_deterministic_with_its_seed():
    tables = _tables()
    a = compare(tables, MODEL_NAME, "strong", "ndcg@10_discover", resample_weights(N))
    b = compare(tables, MODEL_NAME, "strong", "ndcg@10_discover", resample_weights(N))
    c = compare(tables, MODEL_NAME, "weak", "ndcg@10_discover", resample_weights(N, seed=1))
    assert a == b and a["ci95"] != c["ci95"]


def test_intervals_sit_beside_each_metric_and_skip_users_without_one():
    tables = _tables()
    results = {name: mean_metrics(t) for name, t in tables.items()}
    add_intervals(results, tables, resample_weights(N), metrics=("ndcg@10", "ndcg@10_discover"))
    for name, r in results.items():
        for metric in ("ndcg@10", "ndcg@10_discover"):
            lo, hi = r[f"{metric}_ci95"]
            assert lo < r[metric] < hi, (name, metric)
        assert "mrr_ci95" not in r and r["n_users_discover"] < r["n_users"] == N
    flat = interval_metrics(results["strong"])
    assert flat["ndcg@10_ci95_lo"] == results["strong"]["ndcg@10_ci95"][0] and "ndcg@10_ci95" not in flat


def test_report_comparisons_pick_the_best_baseline_on_the_point_estimate():
    tables = _tables()
    results = {name: mean_metrics(t) for name, t in tables.items()}
    out = confidence(results, tables, baselines=("weak", "strong"), n_seeds=3)
    assert out["ci_method"] == (
        "paired bootstrap over users, 1000 resamples, seed 0, per-user metrics averaged over 3 seeds"
    )
    comps = out["comparisons"]
    assert set(comps) == {
        f"{MODEL_NAME}/best_baseline",
        f"{MODEL_NAME}/{ABLATION_NAME}",
        f"discover:{MODEL_NAME}/best_baseline",
        f"discover:{MODEL_NAME}/{ABLATION_NAME}",
    }
    best = comps[f"{MODEL_NAME}/best_baseline"]
    assert best["metric"] == "ndcg@10" and best["baseline"] == "strong"
    assert best["ratio"] == pytest.approx(1.2) and best["ci95"][0] > 1.0
    assert best["verdict"].startswith("better than strong: yes, 95 % CI 1.")
    disc = comps[f"discover:{MODEL_NAME}/best_baseline"]
    assert disc["metric"] == "ndcg@10_discover" and disc["ratio"] == pytest.approx(1.0)
    assert "baseline" not in comps[f"{MODEL_NAME}/{ABLATION_NAME}"]
    assert set(results[MODEL_NAME]) >= {f"{m}_ci95" for m in CI_METRICS}
    metrics, params = comparison_fields(comps)
    assert metrics[f"comparison.discover.{MODEL_NAME}/best_baseline.ratio"] == pytest.approx(1.0)
    assert params[f"comparison.{MODEL_NAME}/best_baseline.baseline"] == "strong"


@pytest.mark.parametrize(
    ("ci", "expected"),
    [
        ((1.012, 1.043), "better than recency_decay: yes, 95 % CI 1.012–1.043"),
        ((0.991, 1.018), "no difference detectable against recency_decay (95 % CI 0.991–1.018)"),
        ((0.9, 0.97), "worse than recency_decay: yes, 95 % CI 0.900–0.970"),
        ((float("nan"), float("nan")), "cannot tell against recency_decay (no interval: too few users)"),
    ],
)
def test_verdict_wording(ci, expected):
    assert verdict({"metric": "ndcg@10", "baseline": "recency_decay", "ratio": 1.0, "ci95": list(ci)}) == expected


def test_the_run_summary_prints_discover_comparisons_and_switches():
    from ml_tasks.steps.status import _comparison_lines, _results_lines, _switch_lines

    tables = _tables()
    results = {name: mean_metrics(t) for name, t in tables.items()}
    report = {"results": results, **confidence(results, tables, baselines=("weak", "strong"))}
    text = "\n".join(_results_lines(report) + _comparison_lines(report))
    assert f"{MODEL_NAME} vs strong on ndcg@10: 1.200 x; better than strong: yes, 95 % CI" in text
    assert "discover: each user's ranking without the categories of their history" in text
    assert f"({int(results[MODEL_NAME]['n_users_discover']):,} users)" in text
    stats = {"median": 3.0, "mean": 4.2, "share_within_max": 0.8, "n_users": 10}
    switch = {"max_events": 12, "n_users_followed": 10, "n_users_discover_followed": 4,
              "events_to_follow": {MODEL_NAME: stats}, "events_to_follow_discover": {MODEL_NAME: stats}}
    lines = _switch_lines({"switch_follow": switch})
    assert "10 users switching" in lines[1] and lines[-1].split()[:3] == [MODEL_NAME, "3", "4.2"]
    assert _switch_lines({}) == []
