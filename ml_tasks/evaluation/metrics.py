"""Full-ranking metrics of ``shared/docs/EVALUATION.md``: NDCG@10, recall@10, MRR; repeat, explore, discover.

Pure numpy; no side effects at import.

A model's output for one cutoff is a score matrix ``scores[n_users, n_candidates]`` over the
candidate categories (every category seen before the cutoff). Rankings sort by score (descending),
then by a global tie-break order (``tie_break_rank``: 0 = first; built by
:func:`ml_tasks.model.ranking.tie_break_rank` from global popularity, then category index), so every
model ranks deterministically and a model that cannot score a category falls back to popularity order.

Relevance is binary: ``relevant[u]`` holds the distinct categories the user touched in the label
window, *including* categories that are not candidates (never seen before the cutoff): they cannot
be ranked but they count in ``|R(u)|``.

*Discover* (EVALUATION.md): each user's ranking without the categories of the user's history, and as
relevant set the new categories the user touches in the window; users without one are left out.

Public API::

    per_user_metrics(scores, candidates, relevant, tie_break, k=10, exclude=None) -> dict[str, ndarray]
    per_user_table(scores, candidates, relevant, tie_break, history=None, k=10) -> dict[str, ndarray]
    mean_metrics(per_user_table) -> dict[str, float]       # means and n_users / n_users_<kind>
    ranking_metrics(scores, candidates, relevant, tie_break, history=None, k=10) -> dict[str, float]
    history_mask(candidates, history) -> bool ndarray[n_users, n_candidates]
    ndcg_at_k(ranked, relevant, k=10) / recall_at_k(...) / reciprocal_rank(...)   # one user, lists
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml_tasks.model.ranking import rank_order

K = 10


# --- one user, plain lists (reference implementation, used by tests) ---------------------------
def ndcg_at_k(ranked: Sequence[int], relevant: Sequence[int] | set[int], k: int = K) -> float:
    """Binary-gain NDCG@k; the ideal DCG counts ``min(k, |relevant|)`` hits."""
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(1.0 / np.log2(i + 2) for i, c in enumerate(list(ranked)[:k]) if c in rel)
    idcg = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(rel))))
    return float(dcg / idcg)


def recall_at_k(ranked: Sequence[int], relevant: Sequence[int] | set[int], k: int = K) -> float:
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(list(ranked)[:k])) / len(rel)


def reciprocal_rank(ranked: Sequence[int], relevant: Sequence[int] | set[int]) -> float:
    rel = set(relevant)
    for i, c in enumerate(ranked):
        if c in rel:
            return 1.0 / (i + 1)
    return 0.0


# --- matrices ------------------------------------------------------------------------------------
def _relevance_matrix(
    candidates: np.ndarray, relevant: Sequence[np.ndarray | Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``[n_users, n_candidates]`` relevance and ``|R(u)|`` (never-seen categories included)."""
    candidates = np.asarray(candidates)
    pos = {int(c): i for i, c in enumerate(candidates)}
    rel = np.zeros((len(relevant), len(candidates)), dtype=bool)
    n_rel = np.zeros(len(relevant), dtype=np.int64)
    for u, r in enumerate(relevant):
        r = {int(c) for c in r}
        n_rel[u] = len(r)
        idx = [pos[c] for c in r if c in pos]
        rel[u, idx] = True
    return rel, n_rel


def history_mask(candidates: np.ndarray, history: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
    """Boolean ``[n_users, n_candidates]``: the candidate is in the user's history."""
    mask, _ = _relevance_matrix(candidates, history)
    return mask


def per_user_metrics(
    scores: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    tie_break: np.ndarray,
    k: int = K,
    exclude: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``ndcg@k``, ``recall@k``, ``mrr`` per user (users with empty ``relevant`` get NaN).

    ``exclude`` (boolean ``[n_users, n_candidates]``) takes candidates out of each user's ranking: the
    others keep their order (the *discover* ranking excludes the user's history).
    """
    return _from_order(rank_order(scores, tie_break), candidates, relevant, k, exclude)


def _from_order(
    order: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    k: int,
    exclude: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    rel, n_rel = _relevance_matrix(candidates, relevant)
    if exclude is not None:
        dropped = np.take_along_axis(np.asarray(exclude, dtype=bool), order, axis=1)
        order = np.take_along_axis(order, np.argsort(dropped, axis=1, kind="stable"), axis=1)
        rel &= ~np.asarray(exclude, dtype=bool)  # an excluded category is never a hit
    hits = np.take_along_axis(rel, order, axis=1)
    top = hits[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (top * discounts[: top.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discounts)
    idcg = np.where(n_rel > 0, ideal[np.clip(np.minimum(n_rel, k) - 1, 0, k - 1)], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = dcg / idcg
        recall = np.where(n_rel > 0, top.sum(axis=1) / n_rel, np.nan)
    any_hit = hits.any(axis=1)
    first = np.argmax(hits, axis=1)
    mrr = np.where(any_hit, 1.0 / (first + 1), 0.0)
    mrr = np.where(n_rel > 0, mrr, np.nan)
    return {f"ndcg@{k}": ndcg, f"recall@{k}": recall, "mrr": mrr}


def per_user_table(
    scores: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    tie_break: np.ndarray,
    history: Sequence[np.ndarray | Sequence[int]] | None = None,
    k: int = K,
) -> dict[str, np.ndarray]:
    """Every per-user metric, NaN where a user has no relevant category of that kind.

    Without ``history``: ``ndcg@k``, ``recall@k``, ``mrr``. With it (categories each user touched
    before the cutoff), also suffixed ``_repeat`` (relevant set restricted to history categories),
    ``_explore`` (restricted to new categories, ranked among all candidates) and ``_discover`` (the
    same new categories, ranked among the candidates outside the user's history).
    """
    order = rank_order(scores, tie_break)
    out = _from_order(order, candidates, relevant, k)
    if history is None:
        return out
    seen = history_mask(candidates, history)
    hist_sets = [{int(c) for c in h} for h in history]
    pairs = list(zip(relevant, hist_sets, strict=True))
    repeat = [np.array([c for c in r if int(c) in h], dtype=np.int64) for r, h in pairs]
    new = [np.array([c for c in r if int(c) not in h], dtype=np.int64) for r, h in pairs]
    for suffix, rel, exclude in (("repeat", repeat, None), ("explore", new, None), ("discover", new, seen)):
        out.update({f"{name}_{suffix}": v for name, v in _from_order(order, candidates, rel, k, exclude).items()})
    return out


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over the users that have a value, and ``n_users`` / ``n_users_<kind>`` counts."""
    out: dict[str, float] = {}
    for name, vals in per_user.items():
        n = int(np.sum(~np.isnan(vals)))
        out[name] = float(np.nanmean(vals)) if n else float("nan")
        if name.startswith("mrr"):
            out["n_users" + name[3:]] = n
    return out


def ranking_metrics(
    scores: np.ndarray,
    candidates: np.ndarray,
    relevant: Sequence[np.ndarray | Sequence[int]],
    tie_break: np.ndarray,
    history: Sequence[np.ndarray | Sequence[int]] | None = None,
    k: int = K,
) -> dict[str, float]:
    """Mean metrics over users with a non-empty relevant set (:func:`per_user_table`), with
    ``n_users`` and, with ``history``, ``n_users_repeat`` / ``n_users_explore`` / ``n_users_discover``."""
    return mean_metrics(per_user_table(scores, candidates, relevant, tie_break, history, k))
