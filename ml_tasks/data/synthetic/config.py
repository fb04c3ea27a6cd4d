"""The generator's settings (``SyntheticConfig``) and the constants that shape the planted behaviour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_tasks.contracts import EVENT_TYPES

PROFILES: tuple[str, ...] = ("stable", "drift", "switch")
EVENTS_STEM = "events"
TRUTH_FILE = "truth.parquet"
TRUTH_COLUMNS: tuple[str, ...] = (
    "user_id",
    "day",
    "profile",
    "top_category_id",
    "top_share",
    "switch_ts",
    "old_top_category_id",
    "new_top_category_id",
)

DAY_S = 86_400
K = 4  # categories in each latent interest set
CATEGORY_ZIPF = 1.0
ITEM_ZIPF = 1.1
INTEREST_POP_POWER = 0.8  # how strongly popularity shapes a user's old interests
MAX_SUCCESSORS = 3
TOP_BOOST = 3.0  # extra pull of the old top category's successors on the new interest set
TWO_HOP_WEIGHT = 0.25
P_FOLLOW = 0.45  # a browse step after the first follows a graph edge from the previous one
P_EXPLORE = 0.05  # a fresh draw comes from global popularity instead of the latent interest
ACTIVITY_SIGMA = 1.0
ACTIVITY_CAP = 30.0
MEAN_STEPS = 5.0  # browse steps (views) per session, geometric
MAX_STEPS = 200
STEP_GAP_MIN_S = 10.0
STEP_GAP_MEAN_S = 100.0
TZ_SHIFT_SD_S = 2.5 * 3600
P_SEARCH = 0.047
P_FAV = 0.047
P_CART = 0.059
P_BUY_GIVEN_CART = 0.4
P_REVIEW_GIVEN_BUY = 0.25
EVENTS_PER_STEP = 1 + P_SEARCH + P_FAV + P_CART * (1 + P_BUY_GIVEN_CART * (1 + P_REVIEW_GIVEN_BUY))
#: relative session starts per UTC hour: quiet nights, evening peak
HOURLY = np.array(
    [0.6, 0.4, 0.3, 0.25, 0.25, 0.3, 0.5, 0.8, 1.0, 1.1, 1.1, 1.2]
    + [1.3, 1.2, 1.1, 1.1, 1.2, 1.3, 1.5, 1.8, 2.0, 1.9, 1.5, 1.0]
)
TYPE = {name: np.int8(i) for i, name in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 3000
    n_categories: int = 120
    n_items: int = 20000
    days: int = 14
    start: str = "2026-01-01"  # UTC
    seed: int = 7
    events_per_user_day: float = 6.0  # mean; default data set ~ 3000*14*6 ≈ 250k events
    frac_stable: float = 0.35
    frac_drift: float = 0.35
    frac_switch: float = 0.30  # users whose interest switches abruptly at a known time

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.days < 1:
            raise ValueError("n_users and days must be >= 1")
        if self.n_categories < 2 * K + 2:
            raise ValueError(f"n_categories must be >= {2 * K + 2} (two disjoint interest sets)")
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories (every category has an item)")
        if not self.events_per_user_day > 0:
            raise ValueError("events_per_user_day must be > 0")
        fracs = (self.frac_stable, self.frac_drift, self.frac_switch)
        if min(fracs) < 0 or abs(sum(fracs) - 1.0) > 1e-6:
            raise ValueError(f"frac_stable + frac_drift + frac_switch must be 1, got {fracs}")
        _start_epoch(self.start)  # fail early on an unparseable start

    @property
    def start_ts(self) -> int:
        """Start of the period, epoch seconds."""
        return _start_epoch(self.start)

    @property
    def period_s(self) -> int:
        return self.days * DAY_S




def _start_epoch(start: str) -> int:
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.timestamp())
