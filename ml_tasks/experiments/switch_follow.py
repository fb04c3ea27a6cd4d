"""Following a planted interest switch (synthetic data): how many events after the switch each
method's top-1 category needs to become the new interest, and NDCG@10 over the switch users.

    switch_follow(model, data, truth, max_events=20) -> dict
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.contracts import ABLATION_NAME, MODEL_NAME
from ml_tasks.evaluation import baselines
from ml_tasks.evaluation.metrics import ranking_metrics
from ml_tasks.evaluation.protocol import cutoff_context, events_frame, model_score_matrix
from ml_tasks.model.predictor import popularity_from_events
from ml_tasks.model.samples import pair_features_at
from ml_tasks.model.score import score_pairs
from ml_tasks.serving import online


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

    For every ``switch`` user of ``truth`` (``ml_tasks.data.synthetic`` truth frame) whose switch happens
    at or after ``since_ts`` (default: the LSTM's training limit, so the switch is out of sample),
    the models rank at ``k = 0..max_events`` events after the switch (a cutoff just after the k-th
    event, inputs built in memory with :mod:`ml_tasks.model.samples`, the warehouse's definitions). A model
    *follows* at ``k`` when its top-1 is the new interest's top category; ``events_to_follow`` is the
    first such ``k`` (``max_events + 1`` when it never does). Also NDCG@10 at the test cutoff over all
    switch users evaluated there (every switch precedes it).
    """
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
    ev = events_frame(data)
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
        pf = pair_features_at(sub, cutoffs, model.horizon_hours)
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
    ctx = cutoff_context(events_frame(data), data.test_cutoff_ts, data.horizon_hours)
    keep = np.isin(np.asarray(ctx.users), sw.index.to_numpy())
    ndcg: dict[str, float] = {}
    if keep.any():
        rel = [r for r, k in zip(ctx.relevant, keep, strict=True) if k]
        hist = [h for h, k in zip(ctx.history, keep, strict=True) if k]
        for name, use_lstm in ((MODEL_NAME, True), (ABLATION_NAME, False)):
            mat = model_score_matrix(model, data, ctx, use_lstm)[keep]
            ndcg[name] = ranking_metrics(mat, ctx.candidates, rel, ctx.tie_break, hist)["ndcg@10"]
        all_events = events_frame(data)
        for name in ("user_frequency", "recency_decay", "last_category"):
            mat = baselines.baseline_scores(
                name, all_events, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours
            )[keep]
            ndcg[name] = ranking_metrics(mat, ctx.candidates, rel, ctx.tie_break, hist)["ndcg@10"]
    result["ndcg@10_after_switch"] = ndcg
    result["n_users_ndcg"] = int(keep.sum())
    return result
