"""The evaluation protocol (EVALUATION.md): model, ablation and baselines, same users.

Pure: frames and config in, a JSON-safe report dict out; no mlflow/duckdb/airflow.

``run_evaluation(data, config, seeds, dataset)``:

1. Baselines at the test cutoff ``T_test`` over every evaluated user (an event before ``T_test`` and
   one in ``[T_test, T_test + horizon)``), ranking every category seen before ``T_test``;
   ``recency_decay`` uses the half-life that maximises NDCG@10 at the validation cutoff
   (``recency_decay_72h`` is reported too).
2. Per seed: the selection fit (everything before ``T_val``, early stopping at ``T_val``; its
   validation metrics are reported), then the final fit (up to ``T_test``, the selected number of
   epochs), scored at ``T_test``. ``lstm_pca_predictor`` and ``predictor_without_lstm`` report the
   mean over seeds and ``*_std``.
3. Every method's metrics come overall, on repeat/explore categories and on *discover* (the ranking
   without the user's history, the new categories as relevant set), each with a paired-bootstrap 95 %
   interval over users (``*_ci95``; for the learned models on the per-user metrics averaged over
   seeds), and ``comparisons``: the model against the best baseline and against its ablation, overall
   and discover, as ratios with intervals and a verdict (:mod:`ml_tasks.evaluation.compare`). The
   model's and the ablation's discover metrics come from their discover head
   (:mod:`ml_tasks.model.discover`), the baselines' from their one ranking without the history.

Public API::

    CutoffContext / cutoff_context(events, cutoff_ts, horizon_hours)
    baseline_tables(data, ctx, half_life_hours, weights=EVENT_WEIGHTS) -> {name: per-user metrics}
    baseline_metrics(data, ctx, half_life_hours, weights=EVENT_WEIGHTS) -> {name: metrics}
    tune_half_life(data, grid) -> (best_half_life, {half_life: ndcg@10 at T_val})
    model_score_matrix(model, data, ctx, use_lstm=True, ranking="overall") -> ndarray[n_users, n_candidates]
    model_per_user(model, data, ctx, use_lstm=True) -> per-user metrics (discover from the discover head)
    run_evaluation(data, config, seeds=(0, 1, 2), dataset="dataset", progress=None) -> report
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.config import ModelConfig
from ml_tasks.contracts import ABLATION_NAME, BASELINE_NAMES, EVENT_WEIGHTS, METRIC_NAMES, MODEL_NAME
from ml_tasks.evaluation import baselines
from ml_tasks.evaluation.compare import confidence
from ml_tasks.evaluation.metrics import mean_metrics, per_user_table
from ml_tasks.model.fit import select_and_fit
from ml_tasks.model.predictor import popularity_from_events, score_matrix
from ml_tasks.model.ranking import tie_break_rank
from ml_tasks.model.score import score_pairs


@dataclass
class CutoffContext:
    """Who is evaluated at a cutoff, what can be ranked, and what is relevant."""

    cutoff_ts: int
    horizon_hours: float
    users: list[str]
    candidates: np.ndarray  # category_idx seen before the cutoff (sorted)
    relevant: list[np.ndarray]  # distinct categories in the label window, per user
    history: list[np.ndarray]  # distinct categories before the cutoff, per user
    popularity: np.ndarray  # events per candidate in the last horizon (all users)
    tie_break: np.ndarray

    def per_user(self, scores: np.ndarray, discover: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-user metrics (overall, repeat, explore, discover; NaN where a user has none).

        ``discover`` (a second score matrix, e.g. the model's discover head) supplies the ``*_discover``
        metrics; without it they come from ``scores`` restricted to the categories outside the history.
        """
        out = per_user_table(scores, self.candidates, self.relevant, self.tie_break, self.history)
        if discover is not None:
            second = per_user_table(discover, self.candidates, self.relevant, self.tie_break, self.history)
            out.update({k: v for k, v in second.items() if k.endswith("_discover")})
        return out

    def metrics(self, scores: np.ndarray, discover: np.ndarray | None = None) -> dict[str, float]:
        return mean_metrics(self.per_user(scores, discover))


def cutoff_context(events: pd.DataFrame, cutoff_ts: int, horizon_hours: float) -> CutoffContext:
    before = events[events["event_ts"] < cutoff_ts]
    window = events[
        (events["event_ts"] >= cutoff_ts) & (events["event_ts"] < cutoff_ts + horizon_hours * 3600)
    ]
    users = sorted(set(before["user_id"].astype(str)) & set(window["user_id"].astype(str)))
    candidates = np.sort(before["category_idx"].unique()).astype(np.int64)

    def per_user(frame: pd.DataFrame) -> list[np.ndarray]:
        frame = frame[frame["user_id"].astype(str).isin(users)]
        groups = frame.groupby(frame["user_id"].astype(str))["category_idx"].unique()
        return [np.sort(np.asarray(groups.get(u, []), dtype=np.int64)) for u in users]

    pop = baselines.popularity_counts(events, cutoff_ts, candidates, horizon_hours)
    return CutoffContext(
        cutoff_ts=int(cutoff_ts),
        horizon_hours=horizon_hours,
        users=users,
        candidates=candidates,
        relevant=per_user(window),
        history=per_user(before),
        popularity=pop,
        tie_break=tie_break_rank(candidates, pop),
    )


def events_frame(data: Any) -> pd.DataFrame:
    ev = data.events
    if ev["user_id"].dtype != object:
        ev = ev.assign(user_id=ev["user_id"].astype(str))
    return ev


def baseline_tables(
    data: Any, ctx: CutoffContext, half_life_hours: float, weights: Mapping[str, float] = EVENT_WEIGHTS,
    population: pd.DataFrame | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-user metrics of every baseline at ``ctx`` (:meth:`CutoffContext.per_user`); ``population``:
    main and background events for the transition statistics (:mod:`ml_tasks.model.background`)."""
    ev = events_frame(data)
    out = {}
    for name in BASELINE_NAMES:
        scores = baselines.baseline_scores(
            name, ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours, half_life_hours, weights,
            population=population,
        )
        out[name] = ctx.per_user(scores)
    return out


def baseline_metrics(
    data: Any, ctx: CutoffContext, half_life_hours: float, weights: Mapping[str, float] = EVENT_WEIGHTS,
    population: pd.DataFrame | None = None,
) -> dict[str, dict[str, float]]:
    tables = baseline_tables(data, ctx, half_life_hours, weights, population=population)
    return {name: mean_metrics(t) for name, t in tables.items()}


def tune_half_life(
    data: Any, grid: Sequence[float], weights: Mapping[str, float] = EVENT_WEIGHTS
) -> tuple[float, dict[float, float]]:
    """The ``recency_decay`` half-life with the best NDCG@10 at the validation cutoff."""
    ev = events_frame(data)
    ctx = cutoff_context(ev, data.val_cutoff_ts, data.horizon_hours)
    results = {}
    for hl in grid:
        s = baselines.recency_decay(
            ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours, hl, weights
        )
        results[float(hl)] = ctx.metrics(s)["ndcg@10"]
    best = max(results, key=lambda h: (results[h], -abs(h - 72.0)))
    return best, results


def _rows_for(data: Any, ctx: CutoffContext) -> pd.DataFrame:
    seqs = data.sequences
    rows = seqs[seqs["cutoff_ts"] == ctx.cutoff_ts].copy()
    rows["user_id"] = rows["user_id"].astype(str)
    rows = rows.set_index("user_id")
    missing = [u for u in ctx.users if u not in rows.index]
    if missing:
        raise ValueError(f"{len(missing)} evaluated users have no ml_sequences row at cutoff {ctx.cutoff_ts}")
    return rows.loc[ctx.users].reset_index()


def model_score_matrix(
    model: Any, data: Any, ctx: CutoffContext, use_lstm: bool = True, ranking: str = "overall"
) -> np.ndarray:
    """The fitted model's (or its ablation's) scores for ``ctx``'s users over ``ctx.candidates``;
    ``ranking="discover"``: the discover head's (history categories unscored, excluded by the metrics)."""
    rows = _rows_for(data, ctx)
    pf = data.pair_features
    pf = pf[pf["cutoff_ts"] == ctx.cutoff_ts]
    pf = pf.assign(user_id=pf["user_id"].astype(str))
    pop = popularity_from_events(data.events, [ctx.cutoff_ts], ctx.horizon_hours)
    pairs, scores = score_pairs(model, rows, pf, popularity=pop, use_lstm=use_lstm, ranking=ranking)
    return score_matrix(pairs, scores, len(rows), ctx.candidates)


def model_per_user(model: Any, data: Any, ctx: CutoffContext, use_lstm: bool = True) -> dict[str, np.ndarray]:
    """Per-user metrics of the model (or ablation): its overall ranking, and its discover head's
    ranking for the ``*_discover`` metrics."""
    overall = model_score_matrix(model, data, ctx, use_lstm)
    return ctx.per_user(overall, model_score_matrix(model, data, ctx, use_lstm, ranking="discover"))


def _seed_average(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-user metrics averaged over seeds (the same users and relevant sets in every seed)."""
    return {k: np.mean(np.stack([t[k] for t in tables]), axis=0) for k in tables[0]}


def _summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], int | float)]
    out: dict[str, float] = {}
    for k in keys:
        vals = np.array([r.get(k, np.nan) for r in runs], dtype=float)
        out[k] = float(np.nanmean(vals))
        if not k.startswith("n_users"):
            out[f"{k}_std"] = float(np.nanstd(vals))
    out["n_seeds"] = len(runs)
    return out


def run_evaluation(
    data: Any,
    config: ModelConfig,
    seeds: Sequence[int] = (0, 1, 2),
    dataset: str = "dataset",
    progress: Callable[[str], None] | None = None,
    population: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The report of EVALUATION.md "Report format" (plus details: validation metrics, timings).

    With background behaviour (:mod:`ml_tasks.model.background`), ``data`` carries its rows in
    ``sequences`` (the LSTM trains on them) and ``population`` its events (the baselines' transition
    statistics); the evaluated users and candidates are the main data's either way."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    ev = events_frame(data)
    test_ctx = cutoff_context(ev, data.test_cutoff_ts, data.horizon_hours)
    val_ctx = cutoff_context(ev, data.val_cutoff_ts, data.horizon_hours)
    best_hl, hl_curve = tune_half_life(data, config.half_life_grid)
    say(f"half-life tuned on the validation cutoff: {best_hl:g} h")
    results: dict[str, dict[str, Any]] = {}
    seed_tables: dict[str, list[dict[str, np.ndarray]]] = {MODEL_NAME: [], ABLATION_NAME: []}
    val_runs: dict[str, list[dict[str, float]]] = {MODEL_NAME: [], ABLATION_NAME: []}
    fits = []
    for seed in seeds:
        cfg = replace(config, seed=int(seed))
        final, selection = select_and_fit(data, cfg)
        for name, use_lstm in ((MODEL_NAME, True), (ABLATION_NAME, False)):
            val_runs[name].append(mean_metrics(model_per_user(selection, data, val_ctx, use_lstm)))
            seed_tables[name].append(model_per_user(final, data, test_ctx, use_lstm))
        test = {name: mean_metrics(tables[-1]) for name, tables in seed_tables.items()}
        fits.append(
            {
                "seed": int(seed),
                "selected_epochs": final.info.get("selected_epochs"),
                "selection_fit_seconds": selection.info.get("fit_seconds"),
                "final_fit_seconds": final.info.get("fit_seconds"),
                "n_components": final.n_components,
                "val_ndcg@10": val_runs[MODEL_NAME][-1]["ndcg@10"],
                "test_ndcg@10": test[MODEL_NAME]["ndcg@10"],
                "lstm_history": selection.info["lstm"]["history"],
                "train_sequences_per_s": selection.info["lstm"]["sequences_per_s"],
            }
        )
        say(
            f"seed {seed}: val {val_runs[MODEL_NAME][-1]['ndcg@10']:.4f} "
            f"(ablation {val_runs[ABLATION_NAME][-1]['ndcg@10']:.4f}), "
            f"test {test[MODEL_NAME]['ndcg@10']:.4f} (ablation {test[ABLATION_NAME]['ndcg@10']:.4f}); "
            f"discover val {val_runs[MODEL_NAME][-1]['ndcg@10_discover']:.4f} "
            f"(ablation {val_runs[ABLATION_NAME][-1]['ndcg@10_discover']:.4f}), "
            f"test {test[MODEL_NAME]['ndcg@10_discover']:.4f} "
            f"(ablation {test[ABLATION_NAME]['ndcg@10_discover']:.4f})"
        )
    per_user = {name: _seed_average(tables) for name, tables in seed_tables.items()}
    for name, tables in seed_tables.items():
        results[name] = _summarise([mean_metrics(t) for t in tables])
    per_user.update(baseline_tables(data, test_ctx, best_hl, population=population))
    per_user["recency_decay_72h"] = baseline_tables_one(data, test_ctx, "recency_decay", 72.0)
    for name in (*BASELINE_NAMES, "recency_decay_72h"):
        results[name] = mean_metrics(per_user[name])
    conf = confidence(results, per_user, BASELINE_NAMES, n_seeds=len(seeds))
    say("; ".join(f"{key}: {c['ratio']:.3f} x, {c['verdict']}" for key, c in conf["comparisons"].items()))
    validation = {name: _summarise(runs) for name, runs in val_runs.items()}
    validation.update(baseline_metrics(data, val_ctx, best_hl, population=population))
    best_baseline = max(BASELINE_NAMES, key=lambda n: results[n]["ndcg@10"])
    model_ndcg = results[MODEL_NAME]["ndcg@10"]
    return {
        "dataset": dataset,
        "protocol": {
            "cutoff_ts": test_ctx.cutoff_ts,
            "val_cutoff_ts": val_ctx.cutoff_ts,
            "horizon_days": data.horizon_hours / 24,
            "n_eval_users": len(test_ctx.users),
            "n_val_users": len(val_ctx.users),
            "n_categories": int(len(test_ctx.candidates)),
            "seeds": [int(s) for s in seeds],
            "event_weights": dict(EVENT_WEIGHTS),
        },
        "results": results,
        **conf,
        "metrics": list(METRIC_NAMES),
        "half_life_hours": best_hl,
        "half_life_validation_ndcg@10": {str(k): v for k, v in hl_curve.items()},
        "validation": validation,
        "summary": {
            "best_baseline": best_baseline,
            "model_vs_best_baseline": model_ndcg / results[best_baseline]["ndcg@10"],
            "model_vs_ablation": model_ndcg / results[ABLATION_NAME]["ndcg@10"],
            "lstm_adds_signal": bool(model_ndcg > results[ABLATION_NAME]["ndcg@10"]),
            "verdicts": {key: c["verdict"] for key, c in conf["comparisons"].items()},
        },
        "fits": fits,
        "config": {k: v for k, v in config.__dict__.items() if k != "extra"},
        "seconds": time.perf_counter() - t0,
    }


def baseline_tables_one(
    data: Any,
    ctx: CutoffContext,
    name: str,
    half_life_hours: float,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
) -> dict[str, np.ndarray]:
    s = baselines.baseline_scores(
        name,
        events_frame(data),
        ctx.cutoff_ts,
        ctx.users,
        ctx.candidates,
        ctx.horizon_hours,
        half_life_hours,
        weights,
    )
    return ctx.per_user(s)


def baseline_metrics_one(
    data: Any,
    ctx: CutoffContext,
    name: str,
    half_life_hours: float,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
) -> dict[str, float]:
    return mean_metrics(baseline_tables_one(data, ctx, name, half_life_hours, weights))


__all__ = [
    "CutoffContext",
    "baseline_metrics",
    "baseline_metrics_one",
    "baseline_tables",
    "baseline_tables_one",
    "cutoff_context",
    "model_per_user",
    "model_score_matrix",
    "run_evaluation",
    "tune_half_life",
]
