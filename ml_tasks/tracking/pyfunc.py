"""The registered model as an MLflow pyfunc: a user's recent events in, ranked categories out.

``mlflow.pyfunc.load_model("models:/user_interest_model@champion").predict(events)`` where
``events`` has the columns ``user_id, category_id, event_type, event_ts`` (epoch seconds) returns
``user_id, category_id, score, rank`` (rank 1 = most likely next interest), ``top_n`` per user
(default 20; pass ``params={"top_n": N}``). Each user is scored at one second after their last
event, with the same features the warehouse computes (``ml_tasks.serving.online``).

``params={"ranking": "discover"}`` returns the discover ranking instead of the overall one (default
``"overall"``): only categories outside the user's events, ranked by the model's discover head —
the rows of ``serving.user_discover_scores`` where the batch path writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from ml_tasks.model import samples
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.score import RANKINGS, score
from ml_tasks.serving import online


class InterestModelPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps a saved ``ml_tasks.model.persist.FittedInterestModel`` folder plus category ids and popularity."""

    def load_context(self, context: Any) -> None:
        self._load(Path(context.artifacts["model_dir"]))

    @classmethod
    def from_dir(cls, model_dir: Path) -> InterestModelPyfunc:
        obj = cls()
        obj._load(Path(model_dir))
        return obj

    def _load(self, model_dir: Path) -> None:
        self.model = FittedInterestModel.load(model_dir)
        cats = pd.read_parquet(model_dir / "categories.parquet")
        self.id_of = dict(zip(cats["category_idx"].astype(int), cats["category_id"].astype(str), strict=True))
        self.idx_of = {v: k for k, v in self.id_of.items()}
        self.popularity = pd.read_parquet(model_dir / "popularity.parquet")
        self.meta = json.loads((model_dir / "serving.json").read_text())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        top_n = int((params or {}).get("top_n", 20))
        ranking = str((params or {}).get("ranking", "overall"))
        if ranking not in RANKINGS:
            raise ValueError(f"params ranking must be one of {list(RANKINGS)}, got {ranking!r}")
        oov = max(self.id_of) + 1
        events = online.normalise_events(pd.DataFrame(model_input), self.idx_of, oov)
        cols = ["user_id", "category_id", "score", "rank"]
        if events.empty:
            return pd.DataFrame(columns=cols)
        cutoffs = events.groupby("user_id")["event_ts"].max() + 1
        rows = online.sequences_at(events, cutoffs, self.model.sequence_length)
        pf = samples.pair_features_at(events, cutoffs, self.meta["horizon_hours"])
        pop = rows[["cutoff_ts"]].drop_duplicates().merge(self.popularity, how="cross")
        ranked = score(self.model, rows, pf, top_n=top_n, popularity=pop, ranking=ranking)
        out = pd.DataFrame({
            "user_id": ranked["user_id"].astype(str),
            "category_id": ranked["category_idx"].map(self.id_of).fillna("").astype(str),
            "score": ranked["score"].astype(float),
            "rank": ranked["rank"].astype("int64"),
        })
        return out[cols]
