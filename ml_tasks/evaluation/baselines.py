"""The six mandatory baselines of ``shared/docs/EVALUATION.md``, scored for every candidate category.

Pure pandas/numpy; no side effects at import. Every baseline reads only the ``events`` export frame
(``user_id``, ``category_idx``, ``event_type``, ``event_ts``) strictly before the cutoff ``T`` and
returns a score matrix ``[n_users, n_candidates]`` aligned with ``users`` and ``candidates``.
Scores are ``> 0`` for categories the baseline can score and ``0`` otherwise; the rankings of
:mod:`ml_tasks.evaluation.metrics` break ties by global popularity, then category index, so unscored
categories fall back to popularity order, as the protocol requires.

=================  ==========================================================================
name               score of category c for user u
=================  ==========================================================================
popularity         events on c in ``[T - horizon, T)``, all users
user_frequency     u's events on c before T (a static profile)
recency_decay      sum of ``w(event_type) * 0.5 ** (age_hours / half_life_hours)`` over u's events on c
last_category      how recently c appeared in u's sequence (most recent first)
markov             first-order transition counts from u's last category to c over all users'
                   sequences (background users' too, when given); backs off to u's own event
                   counts, then popularity
covisitation       sum over u's 10 most recent distinct categories a (weight 1/rank) of how often c
                   followed a within 3 events in all users' sequences (background users' too,
                   when given), normalised per a
=================  ==========================================================================

In the *discover* ranking (the user's history left out) recency, frequency and last-category have
nothing to score and follow popularity order; popularity, markov and covisitation are the real ones.

Public API::

    events_before(events, cutoff_ts) -> DataFrame
    transition_counts(ev) / markov_scores(counts, user_events, users, candidates)      # markov in two parts
    covisitation_table(ev) / covisitation_scores(table, user_events, users, candidates)  # the same
    popularity_counts(events, cutoff_ts, candidates, horizon_hours) -> ndarray
    baseline_scores(name, events, cutoff_ts, users, candidates, horizon_hours,
                    half_life_hours=72.0, weights=EVENT_WEIGHTS, population=None) -> ndarray[n_users, n_candidates]
    BASELINES   # name -> function(events, cutoff_ts, users, candidates, horizon_hours, **options)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ml_tasks.contracts import BASELINE_NAMES, EVENT_WEIGHTS

# the population statistics are shared with the model's discover head (one definition)
from ml_tasks.model.population import (  # noqa: F401  (re-exported)
    COVISIT_RECENT,
    COVISIT_WINDOW,
    covisitation_table,
    transition_counts,
)


def events_before(events: pd.DataFrame, cutoff_ts: int) -> pd.DataFrame:
    """Events strictly before ``cutoff_ts``, ordered by user and time (stable)."""
    ev = events.loc[events["event_ts"] < cutoff_ts, ["user_id", "category_idx", "event_type", "event_ts"]]
    return ev.sort_values(["user_id", "event_ts"], kind="stable")


def popularity_counts(
    events: pd.DataFrame, cutoff_ts: int, candidates: np.ndarray, horizon_hours: float
) -> np.ndarray:
    """Events per candidate category in ``[cutoff - horizon, cutoff)`` over all users."""
    lo = cutoff_ts - horizon_hours * 3600
    recent = events.loc[(events["event_ts"] >= lo) & (events["event_ts"] < cutoff_ts), "category_idx"]
    counts = recent.value_counts()
    return counts.reindex(np.asarray(candidates)).fillna(0).to_numpy(dtype=float)


def _indexer(
    ev: pd.DataFrame, users: Sequence[str], candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row (user) and column (candidate) position of each row of ``ev``; ``keep`` drops the rest."""
    u = pd.Index(users).get_indexer(ev["user_id"])
    c = pd.Index(np.asarray(candidates)).get_indexer(ev["category_idx"])
    keep = (u >= 0) & (c >= 0)
    return u[keep], c[keep], keep


def _scatter(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=float)
    np.add.at(out, (rows, cols), vals)
    return out


def popularity(events, cutoff_ts, users, candidates, horizon_hours, **_: object) -> np.ndarray:
    pop = popularity_counts(events, cutoff_ts, candidates, horizon_hours)
    return np.broadcast_to(pop, (len(users), len(candidates))).copy()


def user_frequency(events, cutoff_ts, users, candidates, horizon_hours, **_: object) -> np.ndarray:
    ev = events_before(events, cutoff_ts)
    r, c, _keep = _indexer(ev, users, candidates)
    return _scatter((len(users), len(candidates)), r, c, np.ones(len(r)))


def recency_decay(
    events,
    cutoff_ts,
    users,
    candidates,
    horizon_hours,
    half_life_hours: float = 72.0,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
    **_: object,
) -> np.ndarray:
    ev = events_before(events, cutoff_ts)
    r, c, keep = _indexer(ev, users, candidates)
    ev = ev[keep]
    age_hours = (cutoff_ts - ev["event_ts"].to_numpy(dtype=float)) / 3600.0
    w = ev["event_type"].map(dict(weights)).fillna(1.0).to_numpy(dtype=float)
    return _scatter((len(users), len(candidates)), r, c, w * 0.5 ** (age_hours / half_life_hours))


def last_category(events, cutoff_ts, users, candidates, horizon_hours, **_: object) -> np.ndarray:
    """Score = 1 / (1 + the user's events after the last one on c): the most recent category first."""
    ev = events_before(events, cutoff_ts)
    r, c, keep = _indexer(ev, users, candidates)
    from_end = ev.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()[keep]
    out = np.zeros((len(users), len(candidates)), dtype=float)
    np.maximum.at(out, (r, c), 1.0 / (1.0 + from_end))
    return out


def markov_scores(
    counts: pd.DataFrame, user_events: pd.DataFrame, users: Sequence[str], candidates: np.ndarray
) -> np.ndarray:
    """Transition counts from each user's last category (``user_events`` sorted by user and time),
    then the user's own event counts scaled below every transition count."""
    shape = (len(users), len(candidates))
    last = user_events.groupby("user_id", sort=False)["category_idx"].last()
    last = last[last.index.isin(pd.Index(users))].rename("src").reset_index()
    pairs = last.merge(counts, on="src", how="inner").rename(columns={"dst": "category_idx"})
    r, c, keep = _indexer(pairs, users, candidates)
    out = _scatter(shape, r, c, pairs["n"].to_numpy(dtype=float)[keep])
    r, c, _keep = _indexer(user_events, users, candidates)
    freq = _scatter(shape, r, c, np.ones(len(r)))
    # transition counts are integers >= 1: the back-off term stays strictly below 1
    return out + freq / (freq.max(axis=1, keepdims=True) + 1.0)


def markov(events, cutoff_ts, users, candidates, horizon_hours, population: pd.DataFrame | None = None,
           **_: object) -> np.ndarray:
    """First-order transition counts ``last(u) -> c`` over all users' consecutive events before T.

    The transition matrix is global (every user's sequence, self-transitions included); its row is
    the user's last category. Categories without a transition from it back off to the user's own
    event counts (scaled below every transition count), then to popularity order. This variant
    reproduces EVALUATION.md's reference figure on the Taobao sample (0.291 NDCG@10); the user's
    own transitions alone give 0.274 and global ones with a direct popularity back-off 0.260.
    ``population``: the events the transitions are counted on, when more than ``events`` (background
    behaviour, :mod:`ml_tasks.model.background`); the user's own last category comes from ``events``.
    """
    ev = events_before(events, cutoff_ts)
    pop_ev = ev if population is None else events_before(population, cutoff_ts)
    return markov_scores(transition_counts(pop_ev), ev, users, candidates)


def covisitation_scores(
    table: pd.DataFrame,
    user_events: pd.DataFrame,
    users: Sequence[str],
    candidates: np.ndarray,
    n_recent: int = COVISIT_RECENT,
) -> np.ndarray:
    """Sum over each user's ``n_recent`` most recent distinct categories ``a`` (weight ``1 / rank``, the
    latest rank 1) of ``table``'s normalised co-visitation ``a -> c``; ``user_events`` sorted by user, time."""
    recent = user_events.iloc[::-1].drop_duplicates(["user_id", "category_idx"])
    rank = recent.groupby("user_id", sort=False).cumcount().to_numpy()
    recent = recent.assign(w=1.0 / (rank + 1))[rank < n_recent]
    recent = recent[recent["user_id"].isin(pd.Index(users))]
    pairs = recent[["user_id", "category_idx", "w"]].rename(columns={"category_idx": "src"})
    pairs = pairs.merge(table, on="src", how="inner").rename(columns={"dst": "category_idx"})
    r, c, keep = _indexer(pairs, users, candidates)
    vals = (pairs["w"] * pairs["weight"]).to_numpy(dtype=float)[keep]
    return _scatter((len(users), len(candidates)), r, c, vals)


def covisitation(events, cutoff_ts, users, candidates, horizon_hours, population: pd.DataFrame | None = None,
                 **_: object) -> np.ndarray:
    """Co-visitation from the user's recent categories (:func:`covisitation_table`, events before T;
    the table from ``population`` when given, as :func:`markov`)."""
    ev = events_before(events, cutoff_ts)
    pop_ev = ev if population is None else events_before(population, cutoff_ts)
    return covisitation_scores(covisitation_table(pop_ev), ev, users, candidates)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "popularity": popularity,
    "user_frequency": user_frequency,
    "recency_decay": recency_decay,
    "last_category": last_category,
    "markov": markov,
    "covisitation": covisitation,
}
assert tuple(BASELINES) == BASELINE_NAMES


def baseline_scores(
    name: str,
    events: pd.DataFrame,
    cutoff_ts: int,
    users: Sequence[str],
    candidates: np.ndarray,
    horizon_hours: float,
    half_life_hours: float = 72.0,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
    population: pd.DataFrame | None = None,
) -> np.ndarray:
    """Score matrix ``[len(users), len(candidates)]`` of baseline ``name`` at ``cutoff_ts``.

    ``population``: events (main and background) for the transition statistics of ``markov`` and
    ``covisitation``; the others read ``events`` only."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name](
        events, cutoff_ts, users, candidates, horizon_hours, half_life_hours=half_life_hours, weights=weights,
        population=population,
    )
