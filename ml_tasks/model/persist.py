"""A fitted interest model and its files: the LSTM, PCA, the predictor and its ablation, the discover head.

``FittedInterestModel.save(dir)`` writes plain files (``lstm.keras``, ``pca.joblib``,
``predictor.joblib``, ``ablation.joblib``, ``discover.joblib``, ``model.json``); ``load(dir)`` reads them
back (a folder without ``discover.joblib``, written before the discover head, loads with ``discover=None``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml_tasks.config import ModelConfig
from ml_tasks.model.predictor import InterestPredictor
from ml_tasks.model.sequences import Vocabulary


@dataclass
class FittedInterestModel:
    keras_model: Any
    vocab: Vocabulary
    pca: Any
    predictor: InterestPredictor
    ablation: InterestPredictor
    config: ModelConfig
    sequence_length: int
    horizon_hours: int
    trained_until_ts: int  # nothing at or after this time was used to fit
    info: dict[str, Any] = field(default_factory=dict)
    discover: Any = None  # ml_tasks.model.discover.DiscoverHead; None in model files written before it

    @property
    def n_components(self) -> int:
        return int(self.pca.n_components_)

    def save(self, directory: str | Path) -> Path:
        """Plain files: ``lstm.keras``, ``pca.joblib``, ``predictor.joblib``, ``ablation.joblib``, ``model.json``."""
        import joblib

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.keras_model.save(d / "lstm.keras")
        joblib.dump(self.pca, d / "pca.joblib")
        joblib.dump(self.predictor, d / "predictor.joblib")
        joblib.dump(self.ablation, d / "ablation.joblib")
        if self.discover is not None:
            joblib.dump(self.discover, d / "discover.joblib")
        meta = {
            "config": self.config.to_json(),
            "vocabulary": [int(c) for c in self.vocab.categories],
            "sequence_length": self.sequence_length,
            "horizon_hours": self.horizon_hours,
            "trained_until_ts": self.trained_until_ts,
            "info": _jsonable(self.info),
        }
        (d / "model.json").write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FittedInterestModel:
        import joblib
        import keras

        import ml_tasks.model.lstm  # noqa: F401  (registers the custom layers and losses)

        d = Path(directory)
        meta = json.loads((d / "model.json").read_text())
        return cls(
            keras_model=keras.saving.load_model(d / "lstm.keras", compile=False),
            vocab=Vocabulary(np.asarray(meta["vocabulary"], dtype=np.int64)),
            pca=joblib.load(d / "pca.joblib"),
            predictor=joblib.load(d / "predictor.joblib"),
            ablation=joblib.load(d / "ablation.joblib"),
            config=ModelConfig.from_json(meta["config"]),
            sequence_length=int(meta["sequence_length"]),
            horizon_hours=int(meta["horizon_hours"]),
            trained_until_ts=int(meta["trained_until_ts"]),
            info=meta.get("info", {}),
            discover=joblib.load(d / "discover.joblib") if (d / "discover.joblib").exists() else None,
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj

