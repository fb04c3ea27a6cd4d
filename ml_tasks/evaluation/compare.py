"""Confidence intervals for every comparison (EVALUATION.md): a paired bootstrap over users.

Pure numpy; no side effects at import.

Every method is scored on the same users, so the comparisons are *paired*: one resample of the users
(drawn with replacement, ``n_resamples`` times, a fixed seed) is applied to every method at once, and a
ratio's interval is the spread of ``mean(model) / mean(other)`` over the resamples (percentile
interval). A metric that only some users have (``*_discover``: users with a new category in the
window) is averaged over the resampled users that have it, so every metric shares the same resamples.

A comparison whose 95 % interval contains 1 is reported as "no difference detectable".

Public API::

    resample_weights(n_users, n_resamples=1000, seed=0) -> int ndarray[n_resamples, n_users]
    add_intervals(results, per_user, weights, metrics=CI_METRICS)     # "<metric>_ci95": [lo, hi] per method
    compare(per_user, a, b, metric, weights) -> {"metric", "ratio", "ci95"}
    comparisons(results, per_user, weights, baselines, model, ablation, extra=()) -> {key: comparison}
    confidence(results, per_user, baselines, n_seeds=1, ...) -> {"comparisons": ..., "ci_method": ...}
    verdict(comparison) -> str         # "better than recency_decay: yes, 95 % CI 1.012-1.043", ...
    interval_metrics(metrics) / comparison_fields(comparisons)     # flat numbers and texts for MLflow
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml_tasks.contracts import ABLATION_NAME, MODEL_NAME

N_RESAMPLES = 1000
SEED = 0
DISCOVER = "discover:"
#: the metrics that get a ``<metric>_ci95`` interval in a report's results
CI_METRICS: tuple[str, ...] = (
    "ndcg@10",
    "recall@10",
    "mrr",
    "ndcg@10_discover",
    "recall@10_discover",
    "mrr_discover",
)

PerUser = Mapping[str, Mapping[str, np.ndarray]]


def resample_weights(n_users: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """How often each user is drawn in each bootstrap resample (``[n_resamples, n_users]`` counts)."""
    rng = np.random.default_rng(seed)
    if n_users == 0:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_resamples)


def _resampled_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of ``values`` in each resample, over the drawn users that have a value (not NaN)."""
    values = np.asarray(values, dtype=float)
    has = ~np.isnan(values)
    total = weights @ np.where(has, values, 0.0)
    count = weights @ has.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def _interval(samples: np.ndarray) -> list[float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def add_intervals(
    results: dict[str, dict[str, Any]],
    per_user: PerUser,
    weights: np.ndarray,
    metrics: Sequence[str] = CI_METRICS,
) -> None:
    """Add ``"<metric>_ci95": [lo, hi]`` beside each metric of every method of ``results`` in ``per_user``."""
    for name, table in per_user.items():
        if name not in results:
            continue
        for metric in metrics:
            if metric in table:
                results[name][f"{metric}_ci95"] = _interval(_resampled_means(table[metric], weights))


def compare(per_user: PerUser, a: str, b: str, metric: str, weights: np.ndarray) -> dict[str, Any]:
    """``mean(a) / mean(b)`` on ``metric`` with its paired-bootstrap 95 % interval."""
    va, vb = np.asarray(per_user[a][metric], dtype=float), np.asarray(per_user[b][metric], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(np.nanmean(va) / np.nanmean(vb)) if np.any(~np.isnan(vb)) else float("nan")
        samples = _resampled_means(va, weights) / _resampled_means(vb, weights)
    return {"metric": metric, "ratio": ratio, "ci95": _interval(samples)}


def comparisons(
    results: Mapping[str, Mapping[str, Any]],
    per_user: PerUser,
    weights: np.ndarray,
    baselines: Sequence[str],
    model: str = MODEL_NAME,
    ablation: str = ABLATION_NAME,
    extra: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """The model against the best baseline (by the point estimate on the same users) and against its
    ablation (and ``extra`` methods, e.g. the champion), overall (``ndcg@10``) and on discover
    (``ndcg@10_discover``), each with a ``verdict``."""
    out: dict[str, dict[str, Any]] = {}
    for prefix, metric in (("", "ndcg@10"), (DISCOVER, "ndcg@10_discover")):
        scored = [b for b in baselines if np.isfinite(results[b].get(metric, np.nan))]
        if not scored or not np.isfinite(results[model].get(metric, np.nan)):
            continue
        best = max(scored, key=lambda b: (results[b][metric], -list(baselines).index(b)))
        out[f"{prefix}{model}/best_baseline"] = {
            "metric": metric,
            "baseline": best,
            **compare(per_user, model, best, metric, weights),
        }
        for other in (ablation, *extra):
            if other in per_user:
                out[f"{prefix}{model}/{other}"] = compare(per_user, model, other, metric, weights)
    for key, comp in out.items():
        comp["verdict"] = verdict(comp, key.rpartition("/")[2])
    return out


def confidence(
    results: dict[str, dict[str, Any]],
    per_user: PerUser,
    baselines: Sequence[str],
    n_seeds: int = 1,
    extra: Sequence[str] = (),
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """Intervals into ``results`` (in place) and the report's ``comparisons`` and ``ci_method``.

    ``per_user``: method -> :func:`ml_tasks.evaluation.metrics.per_user_table` on the same users (for
    learned models fitted with several seeds, the per-user metrics averaged over the seeds).
    """
    n_users = len(next(iter(next(iter(per_user.values())).values())))
    weights = resample_weights(n_users, n_resamples, seed)
    add_intervals(results, per_user, weights)
    method = f"paired bootstrap over users, {n_resamples} resamples, seed {seed}"
    if n_seeds > 1:
        method += f", per-user metrics averaged over {n_seeds} seeds"
    return {
        "comparisons": comparisons(results, per_user, weights, baselines, extra=extra),
        "ci_method": method,
    }


def verdict(comparison: Mapping[str, Any], other: str | None = None) -> str:
    """One plain sentence: better / no difference detectable / worse, with the 95 % interval."""
    other = comparison.get("baseline") or other or "the other method"
    lo, hi = comparison["ci95"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"cannot tell against {other} (no interval: too few users)"
    ci = f"95 % CI {lo:.3f}–{hi:.3f}"
    if lo > 1.0:
        return f"better than {other}: yes, {ci}"
    if hi < 1.0:
        return f"worse than {other}: yes, {ci}"
    return f"no difference detectable against {other} ({ci})"


def interval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``metrics`` with each ``"<m>_ci95": [lo, hi]`` as two numbers ``<m>_ci95_lo`` / ``<m>_ci95_hi``
    (what a metrics store takes)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.endswith("_ci95") and isinstance(value, list | tuple) and len(value) == 2:
            out[f"{key}_lo"], out[f"{key}_hi"] = float(value[0]), float(value[1])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def comparison_fields(comps: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """A report's ``comparisons`` as flat metrics (``<key>.ratio``, ``<key>.ci95_lo``/``_hi``) and params
    (``<key>.metric``, ``.baseline``, ``.verdict``); ``discover:`` becomes ``discover.`` in the keys."""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    for key, comp in comps.items():
        name = "comparison." + key.replace(":", ".")
        metrics[f"{name}.ratio"] = float(comp["ratio"])
        metrics[f"{name}.ci95_lo"], metrics[f"{name}.ci95_hi"] = (float(v) for v in comp["ci95"])
        for field in ("metric", "baseline", "verdict"):
            if field in comp:
                params[f"{name}.{field}"] = str(comp[field])
    return metrics, params
