"""The warehouse's ML exports as pandas frames (``ModelData``), read from Parquet or built in memory.

``ModelData.from_dir(export_dir)`` reads the five Parquet exports of ``contracts.EXPORT_COLUMNS``;
``ModelData.from_events(events, ...)`` builds the same frames from canonical events with the
warehouse's definitions (``ml_tasks.model.samples``): for tests, benchmarks and notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml_tasks.contracts import (
    EXPORT_CATEGORIES,
    EXPORT_EVENTS,
    EXPORT_PAIR_FEATURES,
    EXPORT_PROTOCOL,
    EXPORT_SEQUENCES,
)
from ml_tasks.model.samples import pair_features_at, sequence_rows


@dataclass
class ModelData:
    """The five Parquet exports of ``contracts.EXPORT_COLUMNS`` as pandas frames."""

    events: pd.DataFrame
    categories: pd.DataFrame
    sequences: pd.DataFrame
    pair_features: pd.DataFrame
    protocol: dict[str, int]

    @classmethod
    def from_dir(cls, export_dir: str | Path) -> ModelData:
        d = Path(export_dir)

        def read(stem: str) -> pd.DataFrame:
            path = d / f"{stem}.parquet"
            if not path.exists():
                candidates = sorted(d.glob(f"{stem}*.parquet")) or sorted((d / stem).glob("*.parquet"))
                if not candidates:
                    raise FileNotFoundError(f"{path}: missing export (run the warehouse build first)")
                return pd.concat([pd.read_parquet(p) for p in candidates], ignore_index=True)
            return pd.read_parquet(path)

        proto = read(EXPORT_PROTOCOL)
        return cls(
            events=read(EXPORT_EVENTS),
            categories=read(EXPORT_CATEGORIES),
            sequences=read(EXPORT_SEQUENCES),
            pair_features=read(EXPORT_PAIR_FEATURES),
            protocol={k: int(v) for k, v in proto.iloc[0].to_dict().items()},
        )

    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        horizon_hours: int = 48,
        cutoff_step_hours: int = 12,
        sequence_length: int = 50,
    ) -> ModelData:
        """The exports built in memory from canonical events (``user_id, item_id, category_id,
        event_type, event_ts``), with the warehouse's definitions: for tests, benchmarks and
        notebooks; the pipeline reads the dbt exports (:meth:`from_dir`)."""
        ev = events.copy()
        ev["user_id"] = ev["user_id"].astype(str)
        ev["category_id"] = ev["category_id"].astype(str)
        ev["event_ts"] = ev["event_ts"].astype("int64")
        if "item_id" not in ev:
            ev["item_id"] = ""
        ev = ev.drop_duplicates()
        first = ev.groupby("category_id")["event_ts"].agg(["min", "size"]).reset_index()
        first = first.sort_values(["min", "category_id"]).reset_index(drop=True)
        first["category_idx"] = np.arange(1, len(first) + 1, dtype=np.int32)
        ev["category_idx"] = ev["category_id"].map(
            dict(zip(first["category_id"], first["category_idx"], strict=True))
        )
        ev["category_idx"] = ev["category_idx"].astype(np.int32)
        # the warehouse's order of a user's events (int_events_enriched): time, category, type, item
        ev = ev.sort_values(["user_id", "event_ts", "category_idx", "event_type", "item_id"], kind="stable")
        ev["event_at"] = pd.to_datetime(ev["event_ts"], unit="s", utc=True)
        ev = ev.reset_index(drop=True)
        users_per_cat = ev.groupby("category_id")["user_id"].nunique()
        categories = pd.DataFrame(
            {
                "category_idx": first["category_idx"],
                "category_id": first["category_id"],
                "first_event_ts": first["min"].astype("int64"),
                "n_events": first["size"].astype("int64"),
                "n_users": first["category_id"].map(users_per_cat).astype("int64"),
            }
        )
        h = horizon_hours * 3600
        max_ts = int(ev["event_ts"].max())
        test, val = max_ts - h, max_ts - 2 * h
        plan = [(test, "test"), (max_ts + 1, "score")]
        c = test - cutoff_step_hours * 3600
        while c > int(ev["event_ts"].min()):
            if c + h <= val:
                plan.append((c, "train"))
            elif c <= val:
                plan.append((c, "val"))
            c -= cutoff_step_hours * 3600
        seq_rows, pair_parts = [], []
        by_user = {u: g for u, g in ev.groupby("user_id", sort=True)}
        for cutoff, split in sorted(plan):
            horizon = None if split == "score" else horizon_hours
            rows = sequence_rows(by_user.items(), pd.Series(cutoff, index=list(by_user)), sequence_length,
                                 split=split, horizon_hours=horizon)
            if not rows:
                continue
            seq_rows.extend(rows)
            cut = pd.Series({r["user_id"]: r["cutoff_ts"] for r in rows})
            pair_parts.append(pair_features_at(ev[ev["user_id"].isin(cut.index)], cut, horizon_hours))
        protocol = {
            "max_ts": max_ts,
            "test_cutoff_ts": test,
            "val_cutoff_ts": val,
            "score_cutoff_ts": max_ts + 1,
            "horizon_hours": horizon_hours,
            "cutoff_step_hours": cutoff_step_hours,
            "sequence_length": sequence_length,
        }
        cols = ["user_id", "item_id", "category_id", "category_idx", "event_type", "event_at", "event_ts"]
        return cls(
            events=ev[cols],
            categories=categories,
            sequences=pd.DataFrame(seq_rows),
            pair_features=pd.concat(pair_parts, ignore_index=True),
            protocol=protocol,
        )

    @property
    def horizon_hours(self) -> int:
        return int(self.protocol["horizon_hours"])

    @property
    def sequence_length(self) -> int:
        return int(self.protocol["sequence_length"])

    @property
    def val_cutoff_ts(self) -> int:
        return int(self.protocol["val_cutoff_ts"])

    @property
    def test_cutoff_ts(self) -> int:
        return int(self.protocol["test_cutoff_ts"])

