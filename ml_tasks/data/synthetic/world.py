"""The planted world: catalogue and transition graph, users and their interests, events and truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_tasks.contracts import CANONICAL_COLUMNS, EVENT_TYPES
from ml_tasks.data.synthetic.config import (
    ACTIVITY_CAP,
    ACTIVITY_SIGMA,
    CATEGORY_ZIPF,
    DAY_S,
    EVENTS_PER_STEP,
    HOURLY,
    INTEREST_POP_POWER,
    ITEM_ZIPF,
    MAX_STEPS,
    MAX_SUCCESSORS,
    MEAN_STEPS,
    P_BUY_GIVEN_CART,
    P_CART,
    P_EXPLORE,
    P_FAV,
    P_FOLLOW,
    P_REVIEW_GIVEN_BUY,
    P_SEARCH,
    PROFILES,
    STEP_GAP_MEAN_S,
    STEP_GAP_MIN_S,
    TOP_BOOST,
    TRUTH_COLUMNS,
    TWO_HOP_WEIGHT,
    TYPE,
    TZ_SHIFT_SD_S,
    K,
    SyntheticConfig,
)


@dataclass(frozen=True)
class _Catalog:
    category_ids: list[str]
    pop: np.ndarray  # (C,) category popularity, sums to 1
    succ: np.ndarray  # (C, 3) successor categories, in decreasing probability
    succ_p: np.ndarray  # (C, 3) their probabilities (0 for an unused third slot)
    succ_cum: np.ndarray  # (C, 3) cumulative, the last used slot exactly 1
    item_ids: list[str]  # by item position; positions are grouped by category
    item_category: np.ndarray  # (I,) category of each item position
    item_key: np.ndarray  # (I,) category + within-category CDF, for one searchsorted


@dataclass(frozen=True)
class _Users:
    profile: np.ndarray  # (U,) index into PROFILES
    activity: np.ndarray  # (U,) mean 1, heavy-tailed
    propensity: np.ndarray  # (U,) fav/cart multiplier, mean 1
    tz_shift: np.ndarray  # (U,) seconds
    old: np.ndarray  # (U, K) categories, slot 0 the top
    w_old: np.ndarray  # (U, K) weights, decreasing
    new: np.ndarray
    w_new: np.ndarray
    drift_from: np.ndarray  # (U,) seconds into the period
    drift_to: np.ndarray
    switch_at: np.ndarray  # (U,) int seconds into the period


def _ids(prefix: str, n: int, min_width: int, numbers: np.ndarray | None = None) -> list[str]:
    width = max(min_width, len(str(n - 1)))
    values = range(n) if numbers is None else numbers.tolist()
    return [f"{prefix}{v:0{width}d}" for v in values]


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for catalog, users and events (the catalog alone is cheap to rebuild)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def _gumbel_top_k(rng: np.random.Generator, log_weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct columns per row drawn without replacement with probability ∝ exp(log_weights),
    in draw order (Gumbel top-k)."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _sorted_dirichlet(rng: np.random.Generator, n: int) -> np.ndarray:
    return -np.sort(-rng.dirichlet(np.full(K, 0.9), size=n), axis=1)


def _catalog(config: SyntheticConfig, rng: np.random.Generator) -> _Catalog:
    n_cat, n_items = config.n_categories, config.n_items
    pop = 1.0 / (rng.permutation(n_cat) + 1.0) ** CATEGORY_ZIPF
    pop /= pop.sum()

    # sparse transition graph: 2-3 successors per category, popular ones more often
    log_w = np.tile(0.5 * np.log(pop), (n_cat, 1))
    np.fill_diagonal(log_w, -np.inf)
    succ = _gumbel_top_k(rng, log_w, MAX_SUCCESSORS).astype(np.int32)
    n_next = rng.integers(2, MAX_SUCCESSORS + 1, size=n_cat)
    raw = rng.gamma(2.0, size=(n_cat, MAX_SUCCESSORS))
    raw[n_next == 2, 2] = 0.0
    succ_p = -np.sort(-raw / raw.sum(axis=1, keepdims=True), axis=1)
    succ_cum = np.cumsum(succ_p, axis=1)
    succ_cum[:, 2] = 1.0
    succ_cum[n_next == 2, 1] = 1.0

    # items: every category has at least one; popular categories have more; Zipf within a category
    share = pop**0.7
    counts = 1 + rng.multinomial(n_items - n_cat, share / share.sum())
    item_category = np.repeat(np.arange(n_cat, dtype=np.int32), counts)
    first = np.cumsum(counts) - counts
    within = np.arange(n_items) - first[item_category]
    weight = 1.0 / (within + 1.0) ** ITEM_ZIPF
    csum = np.cumsum(weight)
    before = np.concatenate(([0.0], csum))[first]
    total = csum[first + counts - 1] - before
    cdf = (csum - before[item_category]) / total[item_category]
    cdf[first + counts - 1] = 1.0
    # item ids are shuffled so that an id says nothing about its category
    item_ids = _ids("i", n_items, 6, rng.permutation(n_items))
    return _Catalog(
        category_ids=_ids("c", n_cat, 3),
        pop=pop,
        succ=succ,
        succ_p=succ_p,
        succ_cum=succ_cum,
        item_ids=item_ids,
        item_category=item_category,
        item_key=item_category + cdf,
    )


def _new_interests(rng: np.random.Generator, cat: _Catalog, old: np.ndarray, w_old: np.ndarray) -> np.ndarray:
    """New interest sets reachable through the graph from the old ones, disjoint from them."""
    m, n_cat = old.shape[0], len(cat.pop)
    rows = np.arange(m)[:, None, None]
    hop1 = cat.succ[old]  # (m, K, 3)
    w1 = w_old[:, :, None] * cat.succ_p[old]
    w1[:, 0, :] *= 1.0 + TOP_BOOST
    score = np.bincount((rows * n_cat + hop1).ravel(), weights=w1.ravel(), minlength=m * n_cat)
    hop2 = cat.succ[hop1]  # (m, K, 3, 3)
    w2 = TWO_HOP_WEIGHT * w1[..., None] * cat.succ_p[hop1]
    score += np.bincount((rows[..., None] * n_cat + hop2).ravel(), weights=w2.ravel(), minlength=m * n_cat)
    score = score.reshape(m, n_cat) + 1e-4 * cat.pop  # popularity only as a fallback
    np.put_along_axis(score, old, 0.0, axis=1)
    with np.errstate(divide="ignore"):
        log_score = np.log(score)
    return _gumbel_top_k(rng, log_score, K)


def _users(config: SyntheticConfig, cat: _Catalog, rng: np.random.Generator) -> _Users:
    n, n_cat = config.n_users, config.n_categories
    n_stable = round(config.frac_stable * n)
    n_drift = min(round(config.frac_drift * n), n - n_stable)
    counts = [n_stable, n_drift, n - n_stable - n_drift]
    profile = rng.permutation(np.repeat(np.arange(3, dtype=np.int8), counts))
    activity = np.minimum(rng.lognormal(-0.5 * ACTIVITY_SIGMA**2, ACTIVITY_SIGMA, n), ACTIVITY_CAP)
    propensity = rng.lognormal(-0.125, 0.5, n)
    tz_shift = rng.normal(0.0, TZ_SHIFT_SD_S, n)
    w_old = _sorted_dirichlet(rng, n)
    w_new = _sorted_dirichlet(rng, n)

    old = np.empty((n, K), dtype=np.int32)
    new = np.empty((n, K), dtype=np.int32)
    log_pop = INTEREST_POP_POWER * np.log(cat.pop)
    chunk = max(1, (1 << 21) // n_cat)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        m = sl.stop - sl.start
        old[sl] = _gumbel_top_k(rng, np.broadcast_to(log_pop, (m, n_cat)), K)
        new[sl] = _new_interests(rng, cat, old[sl], w_old[sl])
    stable = profile == PROFILES.index("stable")
    new[stable] = old[stable]
    w_new[stable] = w_old[stable]

    period = float(config.period_s)
    return _Users(
        profile=profile,
        activity=activity,
        propensity=propensity,
        tz_shift=tz_shift,
        old=old,
        w_old=w_old,
        new=new,
        w_new=w_new,
        drift_from=rng.uniform(0.05, 0.3, n) * period,
        drift_to=rng.uniform(0.7, 0.95, n) * period,
        switch_at=np.floor(rng.uniform(0.4, 0.8, n) * period).astype(np.int64),
    )


def _fresh_categories(
    rng: np.random.Generator, cat: _Catalog, users: _Users, user: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """A draw from each user's latent interest at time ``t`` (seconds into the period)."""
    n = len(t)
    profile = users.profile[user]
    alpha = np.zeros(n)
    drift = np.flatnonzero(profile == PROFILES.index("drift"))
    u = user[drift]
    span = users.drift_to[u] - users.drift_from[u]
    alpha[drift] = np.clip((t[drift] - users.drift_from[u]) / span, 0.0, 1.0)
    switch = np.flatnonzero(profile == PROFILES.index("switch"))
    alpha[switch] = t[switch] >= users.switch_at[user[switch]]
    use_new = rng.random(n) < alpha
    del alpha, profile

    r = rng.random(n)
    cum_old = np.cumsum(users.w_old, axis=1)
    cum_new = np.cumsum(users.w_new, axis=1)
    slot = np.zeros(n, dtype=np.int64)
    for j in range(K - 1):
        slot += r > np.where(use_new, cum_new[user, j], cum_old[user, j])
    out = np.where(use_new, users.new[user, slot], users.old[user, slot])

    explore = np.flatnonzero(rng.random(n) < P_EXPLORE)
    pop_cum = np.cumsum(cat.pop)
    picked = np.searchsorted(pop_cum, rng.random(len(explore)) * pop_cum[-1], side="right")
    out[explore] = np.minimum(picked, len(cat.pop) - 1)
    return out.astype(np.int32)


def _events(config: SyntheticConfig, cat: _Catalog, users: _Users, rng: np.random.Generator) -> dict:
    """Event arrays (user, item, type, ts) sorted by (ts, user); ts in epoch seconds."""
    n_users = config.n_users
    period = config.period_s

    # sessions: count per user from activity; start on a daily rhythm; lengths geometric
    per_session = MEAN_STEPS * EVENTS_PER_STEP
    lam = config.events_per_user_day * config.days * users.activity / per_session
    n_sessions = np.maximum(1, rng.poisson(lam))
    n_s = int(n_sessions.sum())
    s_user = np.repeat(np.arange(n_users, dtype=np.int32), n_sessions)
    hour_cum = np.cumsum(HOURLY) / HOURLY.sum()
    hour = np.minimum(np.searchsorted(hour_cum, rng.random(n_s), side="right"), 23)
    second = (hour * 3600.0 + rng.uniform(0.0, 3600.0, n_s) + users.tz_shift[s_user]) % DAY_S
    s_start = rng.integers(0, config.days, n_s) * float(DAY_S) + second
    length = np.minimum(rng.geometric(1.0 / MEAN_STEPS, n_s), MAX_STEPS)
    # longest sessions first: the sessions still running at step k are then a prefix
    order = np.argsort(-length, kind="stable")
    s_user, s_start, length = s_user[order], s_start[order], length[order]
    offset = np.cumsum(length) - length
    n_steps = int(length.sum())

    # browse steps (views), minutes apart within a session
    e_session = np.repeat(np.arange(n_s), length)
    gap = STEP_GAP_MIN_S + rng.exponential(STEP_GAP_MEAN_S, n_steps)
    gap[offset] = 0.0
    elapsed = np.cumsum(gap)
    t = s_start[e_session] + (elapsed - elapsed[offset][e_session])
    del gap, elapsed
    user = s_user[e_session]
    del e_session

    # categories: a fresh draw from the latent interest, or a graph edge from the previous step
    category = _fresh_categories(rng, cat, users, user, t)
    follow = rng.random(n_steps) < P_FOLLOW
    r_next = rng.random(n_steps)
    running = n_s - np.cumsum(np.bincount(length))  # sessions with more than k steps
    for k in range(1, int(length.max())):
        idx = offset[: running[k]] + k
        idx = idx[follow[idx]]
        prev = category[idx - 1]
        u = r_next[idx]
        slot = (u > cat.succ_cum[prev, 0]).astype(np.int64) + (u > cat.succ_cum[prev, 1])
        category[idx] = cat.succ[prev, slot]
    del follow, r_next
    item = np.searchsorted(cat.item_key, category + rng.random(n_steps), side="right").astype(np.int32)
    del category

    # the funnel around a view: search before it; fav, cart after it; buy after a cart; review later
    search = np.flatnonzero(rng.random(n_steps) < P_SEARCH)
    t_search = np.maximum(t[search] - rng.uniform(5.0, 90.0, len(search)), 0.0)
    g = users.propensity[user]
    fav = np.flatnonzero(rng.random(n_steps) < P_FAV * g)
    t_fav = t[fav] + rng.uniform(5.0, 240.0, len(fav))
    cart = np.flatnonzero(rng.random(n_steps) < np.minimum(P_CART * g, 0.5))
    del g
    t_cart = t[cart] + rng.uniform(10.0, 400.0, len(cart))
    keep = rng.random(len(cart)) < P_BUY_GIVEN_CART
    buy, t_buy = cart[keep], t_cart[keep] + rng.uniform(60.0, 3600.0, int(keep.sum()))
    keep = rng.random(len(buy)) < P_REVIEW_GIVEN_BUY
    review, t_review = buy[keep], t_buy[keep] + rng.uniform(3600.0, 96 * 3600.0, int(keep.sum()))

    parts = [
        (None, "view", t),
        (search, "search", t_search),
        (fav, "fav", t_fav),
        (cart, "cart", t_cart),
        (buy, "buy", t_buy),
        (review, "review", t_review),
    ]
    ts = np.floor(np.concatenate([p[2] for p in parts])).astype(np.int64)
    all_user = np.concatenate([user if p[0] is None else user[p[0]] for p in parts])
    all_item = np.concatenate([item if p[0] is None else item[p[0]] for p in parts])
    etype = np.concatenate([np.full(len(p[2]), TYPE[p[1]], dtype=np.int8) for p in parts])
    del parts, t, user, item

    inside = ts < period
    ts, all_user, all_item, etype = ts[inside], all_user[inside], all_item[inside], etype[inside]
    # one stable integer sort on (ts, user); user ids are zero-padded, so code order == id order
    order = np.argsort(ts * np.int64(n_users) + all_user, kind="stable")
    return {
        "user": all_user[order],
        "item": all_item[order],
        "type": etype[order],
        "ts": ts[order] + config.start_ts,
    }


def _events_frame(config: SyntheticConfig, cat: _Catalog, ev: dict) -> pd.DataFrame:
    user_ids = pd.array(_ids("u", config.n_users, 6), dtype="str")
    item_ids = pd.array(cat.item_ids, dtype="str")
    category_ids = pd.array(cat.category_ids, dtype="str")
    types = pd.array(list(EVENT_TYPES), dtype="str")
    return pd.DataFrame(
        {
            "user_id": user_ids.take(ev["user"]),
            "item_id": item_ids.take(ev["item"]),
            "category_id": category_ids.take(cat.item_category[ev["item"]]),
            "event_type": types.take(ev["type"]),
            "event_ts": ev["ts"],
        },
        columns=list(CANONICAL_COLUMNS),
    )


def _ramp_integral(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∫_{-inf}^{t} clip((x - a) / (b - a), 0, 1) dx."""
    inside = np.clip(t, a, b) - a
    return inside**2 / (2.0 * (b - a)) + np.maximum(t - b, 0.0)


def _truth_frame(config: SyntheticConfig, cat: _Catalog, users: _Users) -> pd.DataFrame:
    n, days = config.n_users, config.days
    user = np.repeat(np.arange(n), days)
    day = np.tile(np.arange(days), n)
    d0 = day * float(DAY_S)
    d1 = d0 + DAY_S
    profile = users.profile[user]

    # latent weight of the new interest set, averaged over the day
    alpha = np.zeros(len(user))
    drift = profile == PROFILES.index("drift")
    a, b = users.drift_from[user[drift]], users.drift_to[user[drift]]
    alpha[drift] = (_ramp_integral(d1[drift], a, b) - _ramp_integral(d0[drift], a, b)) / DAY_S
    switch = profile == PROFILES.index("switch")
    alpha[switch] = np.clip((d1[switch] - users.switch_at[user[switch]]) / DAY_S, 0.0, 1.0)
    share_old = (1.0 - alpha) * users.w_old[user, 0]
    share_new = alpha * users.w_new[user, 0]
    top = np.where(share_new > share_old, users.new[user, 0], users.old[user, 0])

    start = pd.Timestamp(config.start_ts, unit="s", tz="UTC")
    dates = np.array([(start + pd.Timedelta(days=i)).date() for i in range(days)], dtype=object)
    category_ids = pd.array(cat.category_ids, dtype="str")
    is_switch = users.profile == PROFILES.index("switch")
    switch_ts = pd.arrays.IntegerArray(users.switch_at + config.start_ts, ~is_switch)
    old_top = np.where(is_switch, users.old[:, 0], -1)
    new_top = np.where(is_switch, users.new[:, 0], -1)
    return pd.DataFrame(
        {
            "user_id": pd.array(_ids("u", n, 6), dtype="str").take(user),
            "day": dates[day],
            "profile": pd.array(list(PROFILES), dtype="str").take(profile),
            "top_category_id": category_ids.take(top),
            "top_share": np.maximum(share_old, share_new),
            "switch_ts": switch_ts.take(user),
            "old_top_category_id": category_ids.take(old_top[user], allow_fill=True),
            "new_top_category_id": category_ids.take(new_top[user], allow_fill=True),
        },
        columns=list(TRUTH_COLUMNS),
    )


def generate(config: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """returns (events, truth)

    events: the canonical columns (ids as ``str``, ``event_ts`` int64 epoch seconds), sorted by
    ``event_ts`` then ``user_id``. truth: one row per (user_id, day), see the module docstring.
    """
    rng_catalog, rng_users, rng_events = _streams(config.seed)
    cat = _catalog(config, rng_catalog)
    users = _users(config, cat, rng_users)
    events = _events_frame(config, cat, _events(config, cat, users, rng_events))
    return events, _truth_frame(config, cat, users)


def transition_graph(config: SyntheticConfig) -> pd.DataFrame:
    """The planted category transition graph: ``category_id, next_category_id, probability``."""
    cat = _catalog(config, _streams(config.seed)[0])
    src = np.repeat(np.arange(len(cat.pop)), MAX_SUCCESSORS)
    used = cat.succ_p.ravel() > 0
    ids = pd.array(cat.category_ids, dtype="str")
    return pd.DataFrame(
        {
            "category_id": ids.take(src[used]),
            "next_category_id": ids.take(cat.succ.ravel()[used]),
            "probability": cat.succ_p.ravel()[used],
        }
    )
