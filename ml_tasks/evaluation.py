"""The evaluation protocol of ``shared/docs/EVALUATION.md``: model, ablation and baselines, same users.

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

``switch_follow(model, data, truth)``: on synthetic data, how fast each model's top-1 category follows
a planted interest switch (events after the switch), and NDCG@10 after it.

Public API::

    CutoffContext / cutoff_context(events, cutoff_ts, horizon_hours)
    baseline_metrics(data, ctx, half_life_hours, weights=EVENT_WEIGHTS) -> {name: metrics}
    tune_half_life(data, grid) -> (best_half_life, {half_life: ndcg@10 at T_val})
    model_score_matrix(model, data, ctx, use_lstm=True) -> ndarray[n_users, n_candidates]
    run_evaluation(data, config, seeds=(0, 1, 2), dataset="dataset", progress=None) -> report
    switch_follow(model, data, truth, max_events=20) -> dict
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks import baselines
from ml_tasks.config import ModelConfig
from ml_tasks.features import ABLATION_NAME, BASELINE_NAMES, EVENT_WEIGHTS, METRIC_NAMES, MODEL_NAME
from ml_tasks.metrics import per_user_metrics, ranking_metrics, tie_break_rank


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

    def metrics(self, scores: np.ndarray) -> dict[str, float]:
        return ranking_metrics(scores, self.candidates, self.relevant, self.tie_break, self.history)


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


def _events(data: Any) -> pd.DataFrame:
    ev = data.events
    if ev["user_id"].dtype != object:
        ev = ev.assign(user_id=ev["user_id"].astype(str))
    return ev


def baseline_metrics(
    data: Any, ctx: CutoffContext, half_life_hours: float, weights: Mapping[str, float] = EVENT_WEIGHTS
) -> dict[str, dict[str, float]]:
    ev = _events(data)
    out = {}
    for name in BASELINE_NAMES:
        scores = baselines.baseline_scores(
            name, ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours, half_life_hours, weights
        )
        out[name] = ctx.metrics(scores)
    return out


def tune_half_life(
    data: Any, grid: Sequence[float], weights: Mapping[str, float] = EVENT_WEIGHTS
) -> tuple[float, dict[float, float]]:
    """The ``recency_decay`` half-life with the best NDCG@10 at the validation cutoff."""
    ev = _events(data)
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


def model_score_matrix(model: Any, data: Any, ctx: CutoffContext, use_lstm: bool = True) -> np.ndarray:
    """The fitted model's (or its ablation's) scores for ``ctx``'s users over ``ctx.candidates``."""
    from ml_tasks.model import score_pairs
    from ml_tasks.predictor import popularity_from_events, score_matrix

    rows = _rows_for(data, ctx)
    pf = data.pair_features
    pf = pf[pf["cutoff_ts"] == ctx.cutoff_ts]
    pf = pf.assign(user_id=pf["user_id"].astype(str))
    pop = popularity_from_events(data.events, [ctx.cutoff_ts], ctx.horizon_hours)
    pairs, scores = score_pairs(model, rows, pf, popularity=pop, use_lstm=use_lstm)
    return score_matrix(pairs, scores, len(rows), ctx.candidates)


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
) -> dict[str, Any]:
    """The report of EVALUATION.md "Report format" (plus details: validation metrics, timings)."""
    from ml_tasks.model import select_and_fit

    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    ev = _events(data)
    test_ctx = cutoff_context(ev, data.test_cutoff_ts, data.horizon_hours)
    val_ctx = cutoff_context(ev, data.val_cutoff_ts, data.horizon_hours)
    best_hl, hl_curve = tune_half_life(data, config.half_life_grid)
    say(f"half-life tuned on the validation cutoff: {best_hl:g} h")
    results: dict[str, dict[str, float]] = {}
    seed_runs: dict[str, list[dict[str, float]]] = {MODEL_NAME: [], ABLATION_NAME: []}
    val_runs: dict[str, list[dict[str, float]]] = {MODEL_NAME: [], ABLATION_NAME: []}
    fits = []
    for seed in seeds:
        cfg = replace(config, seed=int(seed))
        final, selection = select_and_fit(data, cfg)
        for name, use_lstm in ((MODEL_NAME, True), (ABLATION_NAME, False)):
            val_runs[name].append(val_ctx.metrics(model_score_matrix(selection, data, val_ctx, use_lstm)))
            seed_runs[name].append(test_ctx.metrics(model_score_matrix(final, data, test_ctx, use_lstm)))
        fits.append(
            {
                "seed": int(seed),
                "selected_epochs": final.info.get("selected_epochs"),
                "selection_fit_seconds": selection.info.get("fit_seconds"),
                "final_fit_seconds": final.info.get("fit_seconds"),
                "n_components": final.n_components,
                "val_ndcg@10": val_runs[MODEL_NAME][-1]["ndcg@10"],
                "test_ndcg@10": seed_runs[MODEL_NAME][-1]["ndcg@10"],
                "lstm_history": selection.info["lstm"]["history"],
                "train_sequences_per_s": selection.info["lstm"]["sequences_per_s"],
            }
        )
        say(
            f"seed {seed}: val {val_runs[MODEL_NAME][-1]['ndcg@10']:.4f} "
            f"(ablation {val_runs[ABLATION_NAME][-1]['ndcg@10']:.4f}), "
            f"test {seed_runs[MODEL_NAME][-1]['ndcg@10']:.4f} (ablation {seed_runs[ABLATION_NAME][-1]['ndcg@10']:.4f})"
        )
    for name in (MODEL_NAME, ABLATION_NAME):
        results[name] = _summarise(seed_runs[name])
    base = baseline_metrics(data, test_ctx, best_hl)
    results.update(base)
    results["recency_decay_72h"] = baseline_metrics_one(data, test_ctx, "recency_decay", 72.0)
    validation = {name: _summarise(runs) for name, runs in val_runs.items()}
    validation.update(baseline_metrics(data, val_ctx, best_hl))
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
        "metrics": list(METRIC_NAMES),
        "half_life_hours": best_hl,
        "half_life_validation_ndcg@10": {str(k): v for k, v in hl_curve.items()},
        "validation": validation,
        "summary": {
            "best_baseline": best_baseline,
            "model_vs_best_baseline": model_ndcg / results[best_baseline]["ndcg@10"],
            "model_vs_ablation": model_ndcg / results[ABLATION_NAME]["ndcg@10"],
            "lstm_adds_signal": bool(model_ndcg > results[ABLATION_NAME]["ndcg@10"]),
        },
        "fits": fits,
        "config": {k: v for k, v in config.__dict__.items() if k != "extra"},
        "seconds": time.perf_counter() - t0,
    }


def baseline_metrics_one(
    data: Any,
    ctx: CutoffContext,
    name: str,
    half_life_hours: float,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
) -> dict[str, float]:
    s = baselines.baseline_scores(
        name,
        _events(data),
        ctx.cutoff_ts,
        ctx.users,
        ctx.candidates,
        ctx.horizon_hours,
        half_life_hours,
        weights,
    )
    return ctx.metrics(s)


def _top1(pairs: pd.DataFrame, score: np.ndarray, pop: pd.DataFrame, cutoffs: np.ndarray) -> np.ndarray:
    """Top-1 category per row (score, then popularity, then category index)."""
    df = pairs[["row", "category_idx"]].copy()
    df["score"] = score
    df["cutoff_ts"] = cutoffs[df["row"].to_numpy()]
    df = df.merge(
        pop[["cutoff_ts", "category_idx", "pop_horizon"]], on=["cutoff_ts", "category_idx"], how="left"
    )
    df["pop_horizon"] = df["pop_horizon"].fillna(0)
    df = df.sort_values(["row", "score", "pop_horizon", "category_idx"], ascending=[True, False, False, True])
    first = df.drop_duplicates("row")
    out = np.zeros(len(cutoffs), dtype=np.int64)
    out[first["row"].to_numpy()] = first["category_idx"].to_numpy()
    return out


def switch_follow(
    model: Any, data: Any, truth: pd.DataFrame, max_events: int = 20, since_ts: int | None = None
) -> dict[str, Any]:
    """How fast each model's top-1 category follows a planted interest switch (synthetic data).

    For every ``switch`` user of ``truth`` (``ml_tasks.synthetic`` truth frame) whose switch happens
    at or after ``since_ts`` (default: the LSTM's training limit, so the switch is out of sample),
    the models rank at ``k = 0..max_events`` events after the switch (a cutoff just after the k-th
    event, inputs built in memory with :mod:`ml_tasks.online`, the warehouse's definitions). A model
    *follows* at ``k`` when its top-1 is the new interest's top category; ``events_to_follow`` is the
    first such ``k`` (``max_events + 1`` when it never does). Also NDCG@10 at the test cutoff over all
    switch users evaluated there (every switch precedes it).
    """
    from ml_tasks import online
    from ml_tasks.model import score_pairs
    from ml_tasks.predictor import popularity_from_events

    cat_idx = dict(
        zip(data.categories["category_id"].astype(str), data.categories["category_idx"], strict=True)
    )
    sw = truth[truth["profile"] == "switch"].copy()
    sw["user_id"] = sw["user_id"].astype(str)
    sw = sw.groupby("user_id", sort=True)[["switch_ts", "new_top_category_id"]].first()
    sw["new_top"] = sw["new_top_category_id"].astype(str).map(cat_idx)
    since = (
        int(model.info.get("lstm_limit_ts", model.trained_until_ts)) if since_ts is None else int(since_ts)
    )
    followed_from = sw[(sw["switch_ts"] >= since) & sw["new_top"].notna()]
    ev = _events(data)
    ev = ev[ev["user_id"].isin(followed_from.index)].sort_values(["user_id", "event_ts"], kind="stable")
    methods = [MODEL_NAME, ABLATION_NAME, "user_frequency", "recency_decay", "last_category"]
    follows: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    users_k: list[np.ndarray] = []
    for k in range(max_events + 1):
        cut = {}
        for user, group in ev.groupby("user_id", sort=True):
            switch_ts = int(followed_from.at[user, "switch_ts"])
            after = group["event_ts"].to_numpy()
            after = after[after >= switch_ts]
            if k == 0:
                cut[user] = switch_ts
            elif len(after) >= k:
                cut[user] = int(after[k - 1]) + 1
        if not cut:
            break
        cutoffs = pd.Series(cut)
        sub = ev[ev["user_id"].isin(cutoffs.index)]
        rows = online.sequences_at(sub, cutoffs, model.sequence_length)
        rows = rows[rows["n_history_events"] > 0].reset_index(drop=True)
        pf = online.pair_features_at(sub, cutoffs, model.horizon_hours)
        pop = popularity_from_events(data.events, rows["cutoff_ts"].unique(), model.horizon_hours)
        row_cut = rows["cutoff_ts"].to_numpy(dtype=np.int64)
        new_top = followed_from.loc[rows["user_id"], "new_top"].to_numpy(dtype=np.int64)
        users_k.append(rows["user_id"].to_numpy())
        for name, use_lstm in ((MODEL_NAME, True), (ABLATION_NAME, False)):
            pairs, score = score_pairs(model, rows, pf, popularity=pop, use_lstm=use_lstm)
            follows[name].append(_top1(pairs, score, pop, row_cut) == new_top)
        keyed = pf.merge(rows[["user_id", "cutoff_ts"]].reset_index(names="row"), on=["user_id", "cutoff_ts"])
        for name, col, sign in (
            ("user_frequency", "n_events", 1.0),
            ("recency_decay", "decay_72h", 1.0),
            ("last_category", "events_since_last", -1.0),
        ):
            follows[name].append(
                _top1(keyed[["row", "category_idx"]], sign * keyed[col].to_numpy(dtype=float), pop, row_cut)
                == new_top
            )
    users = list(followed_from.index)
    result: dict[str, Any] = {
        "n_switch_users": int(len(sw)),
        "n_users_followed": len(users),
        "since_ts": since,
        "max_events": max_events,
        "events_to_follow": {},
        "share_following_by_event": {},
    }
    for name in methods:
        first = {u: max_events + 1 for u in users}
        share = []
        for k, (who, ok) in enumerate(zip(users_k, follows[name], strict=True)):
            share.append(float(ok.mean()) if len(ok) else float("nan"))
            for u, hit in zip(who, ok, strict=True):
                if hit and first[u] > k:
                    first[u] = k
        vals = np.array(list(first.values()), dtype=float)
        result["events_to_follow"][name] = {
            "median": float(np.median(vals)) if len(vals) else float("nan"),
            "mean": float(vals.mean()) if len(vals) else float("nan"),
            "share_within_max": float((vals <= max_events).mean()) if len(vals) else float("nan"),
        }
        result["share_following_by_event"][name] = share
    # NDCG@10 at the test cutoff for every evaluated switch user
    ctx = cutoff_context(_events(data), data.test_cutoff_ts, data.horizon_hours)
    keep = np.isin(np.asarray(ctx.users), sw.index.to_numpy())
    ndcg: dict[str, float] = {}
    if keep.any():
        rel = [r for r, k in zip(ctx.relevant, keep, strict=True) if k]
        hist = [h for h, k in zip(ctx.history, keep, strict=True) if k]
        for name, use_lstm in ((MODEL_NAME, True), (ABLATION_NAME, False)):
            mat = model_score_matrix(model, data, ctx, use_lstm)[keep]
            ndcg[name] = ranking_metrics(mat, ctx.candidates, rel, ctx.tie_break, hist)["ndcg@10"]
        all_events = _events(data)
        for name in ("user_frequency", "recency_decay", "last_category"):
            mat = baselines.baseline_scores(
                name, all_events, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours
            )[keep]
            ndcg[name] = ranking_metrics(mat, ctx.candidates, rel, ctx.tie_break, hist)["ndcg@10"]
    result["ndcg@10_after_switch"] = ndcg
    result["n_users_ndcg"] = int(keep.sum())
    return result


__all__ = [
    "CutoffContext",
    "baseline_metrics",
    "baseline_metrics_one",
    "cutoff_context",
    "model_score_matrix",
    "per_user_metrics",
    "run_evaluation",
    "switch_follow",
    "tune_half_life",
]
