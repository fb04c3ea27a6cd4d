"""Following a planted interest switch (synthetic data): how many events after the switch each method's
top-1 category needs to become the new interest, the same for its *discover* top-1, and the metrics
over the switch users at the test cutoff.

Pure: a fitted model, the model data and the generator's truth frame in, a JSON-safe dict out.

    switch_follow(model, data, truth, max_events=20, since_ts=None, half_life_hours=72.0) -> dict
    truth_mismatch(truth, data) -> str | None     # why a truth file does not describe the data
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.contracts import ABLATION_NAME, BASELINE_NAMES, MODEL_NAME
from ml_tasks.evaluation import baselines
from ml_tasks.evaluation.metrics import history_mask, ranking_metrics
from ml_tasks.evaluation.protocol import cutoff_context, events_frame, model_score_matrix
from ml_tasks.model.predictor import popularity_from_events, score_matrix
from ml_tasks.model.ranking import rank_order
from ml_tasks.model.samples import pair_features_at, sequence_rows
from ml_tasks.model.score import score_pairs

METHODS: tuple[str, ...] = (MODEL_NAME, ABLATION_NAME, *BASELINE_NAMES)
#: baselines read from the in-memory pair features: name -> (column, score of the column)
_PAIR_BASELINES = {
    "user_frequency": ("n_events", lambda v: v),
    "recency_decay": ("decay_72h", lambda v: v),
    "last_category": ("events_since_last", lambda v: 1.0 / (1.0 + v)),
}


def switch_users(truth: pd.DataFrame, data: Any, since_ts: int) -> tuple[pd.DataFrame, int]:
    """The ``switch`` users of ``truth`` whose switch happens at or after ``since_ts``, with the index of
    their new top category (``switch_ts``, ``new_top``), and the number of switch users in all."""
    cat_idx = dict(
        zip(data.categories["category_id"].astype(str), data.categories["category_idx"], strict=True)
    )
    sw = truth[truth["profile"] == "switch"].copy()
    sw["user_id"] = sw["user_id"].astype(str)
    sw = sw.groupby("user_id", sort=True)[["switch_ts", "new_top_category_id"]].first()
    sw["new_top"] = sw["new_top_category_id"].astype(str).map(cat_idx)
    followed = sw[(sw["switch_ts"] >= since_ts) & sw["new_top"].notna()]
    return followed.assign(new_top=followed["new_top"].astype(np.int64)), len(sw)


def truth_mismatch(truth: pd.DataFrame, data: Any) -> str | None:
    """Why ``truth`` does not describe ``data`` (``None`` when it does): 90 % of the data's users must be
    in it, and 60 % of its switch users must touch their new top category after their switch (~80 %
    do on the generator's own data, ~35 % against another seed's truth with 16 categories)."""
    users = set(events_frame(data)["user_id"].unique())
    known = set(truth["user_id"].astype(str))
    if not users or len(users & known) < 0.9 * len(users):
        return f"{len(users - known):,} of the data's {len(users):,} users are not in the truth file"
    followed, _n = switch_users(truth, data, since_ts=-(2**62))
    if followed.empty:
        return "the truth file has no switch user whose new top category is in the data"
    ev = events_frame(data)
    ev = ev[ev["user_id"].isin(followed.index)]
    after = ev["event_ts"].to_numpy() >= ev["user_id"].map(followed["switch_ts"]).to_numpy()
    on_top = ev["category_idx"].to_numpy() == ev["user_id"].map(followed["new_top"]).to_numpy()
    share = ev.loc[after & on_top, "user_id"].nunique() / len(followed)
    if share < 0.6:
        return f"only {share:.0%} of its switch users touch their new top category after the switch"
    return None


def _cutoffs_after(ev: pd.DataFrame, switches: pd.DataFrame, k: int) -> pd.Series:
    """Per user, the cutoff just after the k-th event at or after the switch (k = 0: the switch)."""
    cut = {}
    for user, group in ev.groupby("user_id", sort=True):
        switch_ts = int(switches.at[user, "switch_ts"])
        after = group["event_ts"].to_numpy()
        after = after[after >= switch_ts]
        if k == 0:
            cut[user] = switch_ts
        elif len(after) >= k:
            cut[user] = int(after[k - 1]) + 1
    return pd.Series(cut, dtype=np.int64)


def _replay_inputs(ev: pd.DataFrame, switches: pd.DataFrame, max_events: int
                   ) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """The events and cutoffs of every (user, k), k = 0.. until no user has k events after the switch (at
    most ``max_events``), each (user, k) under a user id of its own (each user's events once per k), and
    ``keys``: that id -> ``user_id, k``."""
    events, cutoffs, keys = [], [], []
    for k in range(max_events + 1):
        cut = _cutoffs_after(ev, switches, k)
        if cut.empty:
            break
        key = cut.index.astype(str) + f"\x1f{k}"
        keys.append(pd.DataFrame({"user_id": cut.index.astype(str), "k": k}, index=key))
        sub = ev[ev["user_id"].isin(cut.index)]
        events.append(sub.assign(user_id=sub["user_id"].map(pd.Series(key, index=cut.index))))
        cutoffs.append(cut.set_axis(key))
    if not cutoffs:
        return ev.iloc[:0], pd.Series(dtype=np.int64), pd.DataFrame(columns=["user_id", "k"])
    return pd.concat(events, ignore_index=True), pd.concat(cutoffs), pd.concat(keys)


def _row_tie_break(pop: pd.DataFrame, row_cut: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per row, each candidate's place in popularity order at the row's cutoff, then category index."""
    table = pop.pivot_table(index="cutoff_ts", columns="category_idx", values="pop_horizon", aggfunc="sum")
    mat = table.reindex(index=row_cut, columns=candidates).fillna(0.0).to_numpy(dtype=float)
    order = np.lexsort((np.broadcast_to(candidates, mat.shape), -mat), axis=-1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(mat.shape[1])[None, :].repeat(mat.shape[0], 0), axis=1)
    return rank


def _scores_at(
    model: Any, data: Any, sub: pd.DataFrame, cutoffs: pd.Series, candidates: np.ndarray, stats: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Rows (one per user, events before its cutoff), every method's score matrix, the model's and the
    ablation's discover-head matrices, and per row the tie-break and the history mask over ``candidates``."""
    rows = pd.DataFrame(sequence_rows(sub.groupby("user_id", sort=True), cutoffs, model.sequence_length))
    rows = rows[rows["n_history_events"] > 0].reset_index(drop=True)
    pf = pair_features_at(sub, cutoffs, model.horizon_hours)
    pop = popularity_from_events(data.events, rows["cutoff_ts"].unique(), model.horizon_hours)
    shape = (len(rows), len(candidates))
    mats: dict[str, np.ndarray] = {}
    discover: dict[str, np.ndarray] = {}
    for name, use_lstm in ((MODEL_NAME, True), (ABLATION_NAME, False)):
        pairs, score = score_pairs(model, rows, pf, popularity=pop, use_lstm=use_lstm)
        mats[name] = score_matrix(pairs, score, len(rows), candidates)
        pairs, score = score_pairs(model, rows, pf, popularity=pop, use_lstm=use_lstm, ranking="discover")
        discover[name] = score_matrix(pairs, score, len(rows), candidates)
    mats["popularity"] = np.zeros(shape)
    r = pd.Index(rows["user_id"]).get_indexer(pf["user_id"])
    c = pd.Index(candidates).get_indexer(pf["category_idx"])
    ok = (r >= 0) & (c >= 0)
    for name, (col, transform) in _PAIR_BASELINES.items():
        mats[name] = np.zeros(shape)
        mats[name][r[ok], c[ok]] = transform(pf[col].to_numpy(dtype=float)[ok])
    before = sub[sub["event_ts"] < sub["user_id"].map(cutoffs)]
    users = rows["user_id"].tolist()
    mats["markov"] = baselines.markov_scores(stats["transitions"], before, users, candidates)
    mats["covisitation"] = baselines.covisitation_scores(stats["covisitation"], before, users, candidates)
    tie_break = _row_tie_break(pop, rows["cutoff_ts"].to_numpy(dtype=np.int64), candidates)
    seen = before.groupby("user_id")["category_idx"].unique()
    history = [seen.get(u, np.zeros(0, np.int64)) for u in users]
    return rows, mats, discover, (tie_break, history_mask(candidates, history))


def _first_follow(users: list[str], who_by_k: list[np.ndarray], hits_by_k: list[np.ndarray], never: int
                  ) -> np.ndarray:
    """Per user, the first k at which the method follows (``never`` when it does not)."""
    first = {u: never for u in users}
    for k, (who, ok) in enumerate(zip(who_by_k, hits_by_k, strict=True)):
        for u, hit in zip(who, ok, strict=True):
            if hit and first.get(u, -1) > k:
                first[u] = k
    return np.array(list(first.values()), dtype=float)


def _stats(first: np.ndarray, never: int) -> dict[str, float]:
    if not len(first):
        return {"median": float("nan"), "mean": float("nan"), "share_within_max": float("nan"), "n_users": 0}
    return {"median": float(np.median(first)), "mean": float(first.mean()),
            "share_within_max": float((first < never).mean()), "n_users": len(first)}


def switch_follow(
    model: Any,
    data: Any,
    truth: pd.DataFrame,
    max_events: int = 20,
    since_ts: int | None = None,
    half_life_hours: float = 72.0,
) -> dict[str, Any]:
    """How fast each method's top-1 category follows a planted interest switch (synthetic data).

    For every ``switch`` user of ``truth`` (``ml_tasks.data.synthetic`` truth frame) whose switch happens
    at or after ``since_ts`` (default: the LSTM's training limit, so the switch is out of sample),
    every method ranks all categories at ``k = 0..max_events`` events after the switch (a cutoff just
    after the k-th event; inputs built in memory with :mod:`ml_tasks.model.samples`, the warehouse's
    definitions; ``recency_decay`` with the 72 h half-life of the pair features; markov and
    co-visitation count transitions in events before ``since_ts``). A method
    *follows* at ``k`` when its top-1 is the new interest's top category; ``events_to_follow`` is the
    first such ``k`` (``max_events + 1`` when it never does); ``share_following_by_event[k]`` the share
    of users followed at ``k``. *Discover*: the top-1 among the categories outside the user's history
    at that cutoff; it can only name the new top category before the user has touched it, so
    ``events_to_follow_discover`` (over the users who had not touched it before the switch) measures
    whether a method anticipates the new interest, and ``share_named_by_event_discover[k]`` is the
    share of those users whose discover top-1 has named it at some point up to ``k``. Also the
    metrics at the test cutoff over all switch users evaluated there (every switch precedes it).
    """
    since = (
        int(model.info.get("lstm_limit_ts", model.trained_until_ts)) if since_ts is None else int(since_ts)
    )
    followed, n_switch = switch_users(truth, data, since)
    all_events = events_frame(data)
    stats_events = baselines.events_before(all_events, since)
    stats = {"transitions": baselines.transition_counts(stats_events),
             "covisitation": baselines.covisitation_table(stats_events)}
    candidates = np.sort(data.categories["category_idx"].to_numpy(dtype=np.int64))
    ev = all_events[all_events["user_id"].isin(followed.index)]
    ev = ev.sort_values(["user_id", "event_ts"], kind="stable")
    hits: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    hits_d: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    users_k: list[np.ndarray] = []
    users_d: list[np.ndarray] = []
    keyed_events, keyed_cutoffs, keys = _replay_inputs(ev, followed, max_events)
    if len(keyed_cutoffs):
        # every (user, k) scored in one pass, as a row of its own
        rows, mats, discover, (tie_break, seen) = _scores_at(model, data, keyed_events, keyed_cutoffs, candidates,
                                                             stats)
        row_keys = keys.loc[rows["user_id"]]
        row_user, row_k = row_keys["user_id"].to_numpy(), row_keys["k"].to_numpy(dtype=np.int64)
        new_top_all = followed.loc[row_user, "new_top"].to_numpy(dtype=np.int64)
        for k in range(keys["k"].nunique()):
            at = np.flatnonzero(row_k == k)
            new_top, seen_k, tie_k = new_top_all[at], seen[at], tie_break[at]
            unseen = ~seen_k[np.arange(len(at)), np.searchsorted(candidates, new_top)]
            users_k.append(row_user[at])
            users_d.append(row_user[at][unseen])
            for name, mat in mats.items():
                order = rank_order(mat[at], tie_k)
                hits[name].append(candidates[order[:, 0]] == new_top)
                if name in discover:  # the model's discover top-1 comes from its discover head
                    order = rank_order(discover[name][at], tie_k)
                ranked_seen = np.take_along_axis(seen_k, order, axis=1)
                first_new = order[np.arange(len(at)), np.argmax(~ranked_seen, axis=1)]
                hits_d[name].append((candidates[first_new] == new_top)[unseen])
    users = list(followed.index)
    unseen_at_switch = list(users_d[0]) if users_d else []
    result: dict[str, Any] = {
        "n_switch_users": int(n_switch),
        "n_users_followed": len(users),
        "n_users_discover_followed": len(unseen_at_switch),
        "since_ts": since,
        "max_events": max_events,
        "events_to_follow": {},
        "share_following_by_event": {},
        "events_to_follow_discover": {},
        "share_named_by_event_discover": {},
    }
    never = max_events + 1
    for name in METHODS:
        result["events_to_follow"][name] = _stats(_first_follow(users, users_k, hits[name], never), never)
        result["share_following_by_event"][name] = [float(h.mean()) if len(h) else float("nan")
                                                    for h in hits[name]]
        first = _first_follow(unseen_at_switch, users_d, hits_d[name], never)
        result["events_to_follow_discover"][name] = _stats(first, never)
        result["share_named_by_event_discover"][name] = [float((first <= k).mean()) if len(first) else float("nan")
                                                         for k in range(len(users_k))]
    result.update(_metrics_at_test(model, data, all_events, truth, half_life_hours))
    return result


def _metrics_at_test(model: Any, data: Any, all_events: pd.DataFrame, truth: pd.DataFrame,
                     half_life_hours: float) -> dict[str, Any]:
    """NDCG@10 overall and discover at the test cutoff for every switch user evaluated there."""
    switchers = set(truth.loc[truth["profile"] == "switch", "user_id"].astype(str))
    ctx = cutoff_context(all_events, data.test_cutoff_ts, data.horizon_hours)
    keep = np.isin(np.asarray(ctx.users), list(switchers))
    out: dict[str, Any] = {"ndcg@10_after_switch": {}, "ndcg@10_discover_after_switch": {},
                           "n_users_ndcg": int(keep.sum())}
    if not keep.any():
        return out
    rel = [r for r, k in zip(ctx.relevant, keep, strict=True) if k]
    hist = [h for h, k in zip(ctx.history, keep, strict=True) if k]
    for name in METHODS:
        if name in (MODEL_NAME, ABLATION_NAME):
            mat = model_score_matrix(model, data, ctx, name == MODEL_NAME)
            dmat = model_score_matrix(model, data, ctx, name == MODEL_NAME, ranking="discover")
        else:
            mat = dmat = baselines.baseline_scores(name, all_events, ctx.cutoff_ts, ctx.users, ctx.candidates,
                                                   ctx.horizon_hours, half_life_hours)
        m = ranking_metrics(mat[keep], ctx.candidates, rel, ctx.tie_break, hist)
        out["ndcg@10_after_switch"][name] = m["ndcg@10"]
        if dmat is not mat:
            m = ranking_metrics(dmat[keep], ctx.candidates, rel, ctx.tie_break, hist)
        out["ndcg@10_discover_after_switch"][name] = m["ndcg@10_discover"]
    out["n_users_discover_ndcg"] = int(m["n_users_discover"])
    return out
