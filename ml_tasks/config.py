"""Configuration as frozen dataclasses with defaults, overridden explicitly.

Paths and URIs come from environment variables; defaults keep everything under the repository's
git-ignored ``.data/`` folder. Nothing here touches the disk at import time.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ml_tasks.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


@dataclass(frozen=True)
class Paths:
    """Where the pipeline reads and writes. Every field has an ``IEP_*`` environment variable."""

    data_dir: Path
    warehouse: Path
    export_dir: Path
    artifact_dir: Path
    landing_dir: Path
    dbt_project_dir: Path
    tracking_uri: str

    @classmethod
    def from_env(cls, **overrides: Any) -> Paths:
        data_dir = _env_path("IEP_DATA_DIR", REPO_ROOT / ".data")
        paths = cls(
            data_dir=data_dir,
            warehouse=_env_path("IEP_WAREHOUSE", data_dir / "warehouse.duckdb"),
            export_dir=_env_path("IEP_EXPORT_DIR", data_dir / "exports"),
            artifact_dir=_env_path("IEP_ARTIFACT_DIR", data_dir / "artifacts"),
            landing_dir=_env_path("IEP_LANDING_DIR", data_dir / "landing"),
            dbt_project_dir=_env_path("IEP_DBT_PROJECT_DIR", REPO_ROOT / "dbt_project"),
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}",
        )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        for key, value in overrides.items():
            if key != "tracking_uri":
                overrides[key] = Path(value).expanduser().resolve()
        return replace(paths, **overrides)

    def run_dir(self, pipeline: str, run_id: str) -> Path:
        """The artifact folder of one run of ``pipeline``: tasks exchange files here.

        Injective and confined: every byte of ``run_id`` other than ASCII letters, digits, ``_`` and ``-``
        is written as ``~XX`` (not ``%XX``: MLflow would decode that in artifact paths), so two run ids never
        share a folder and none (``..``, ``a/../b``) leaves ``artifact_dir/pipeline``.
        """
        if not run_id or not pipeline.replace("_", "").isalnum():
            raise PipelineError(f"a run needs a non-empty run id and a plain pipeline name, got {pipeline!r}/{run_id!r}")
        safe = "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_-") else f"~{b:02X}"
                       for b in run_id.encode())
        return self.artifact_dir / pipeline / safe

    @property
    def mlflow_artifact_root(self) -> Path:
        return Path(os.environ.get("IEP_MLFLOW_ARTIFACT_ROOT", self.data_dir / "mlflow" / "artifacts"))


@dataclass(frozen=True)
class WarehouseConfig:
    """dbt vars that shape the ML tables (passed to ``dbt build --vars``)."""

    horizon_hours: int = 48
    cutoff_step_hours: int = 12
    sequence_length: int = 50
    session_gap_minutes: int = 30

    @classmethod
    def from_env(cls) -> WarehouseConfig:
        """Defaults, overridden by ``IEP_HORIZON_HOURS``, ``IEP_CUTOFF_STEP_HOURS``, ``IEP_SEQUENCE_LENGTH``,
        ``IEP_SESSION_GAP_MINUTES``."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"IEP_{f.name.upper()}")
            if raw:
                values[f.name] = int(raw)
        return cls(**values)

    def dbt_vars(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the LSTM -> PCA -> predictor model (see ``ml_tasks.model``)."""

    seed: int = 42
    # sequence model
    embedding_dim: int = 32
    embedding_init: float = 0.3  # stddev of the (tied) category embedding at initialisation
    lstm_units: tuple[int, ...] = (64, 64)
    skip_connections: bool = True  # the heads also see the last event's and the sequence's embeddings
    # the next-window head mixes in a pointer over the sequence's positions (ml_tasks.model.lstm); measured
    # with window_loss_weight=1.0 and early_stopping_monitor="val_window_loss" (README, Results)
    copy_head: bool = False
    dropout: float = 0.1
    epochs: int = 15
    batch_size: int = 128
    learning_rate: float = 3e-3
    early_stopping_patience: int = 2
    early_stopping_monitor: str = "val_next_loss"  # or val_window_loss; both on data after the LSTM's limit
    next_positions: int | None = 16  # next-event objective on the last K positions (None: all)
    next_loss_weight: float = 1.0  # next-event objective
    window_loss_weight: float = 0.3  # next-window category distribution at the last position
    max_train_sequences: int | None = 30_000  # subsample (user, cutoff) rows above this many
    min_category_events: int = 1  # rarer categories share the out-of-vocabulary bucket
    # PCA
    pca_variance: float = 0.8
    # predictor
    predictor_c: float = 1.0  # inverse L2 strength of the logistic regression
    # head: both heads' log-probabilities/ranks; pca: z_j * category_j; interactions: heads x recency
    lstm_features: tuple[str, ...] = ("head", "pca", "interactions")
    top_k_candidates: int = 10  # the LSTM head's top-K join the candidates
    n_popular_candidates: int = 50  # the most popular categories of the last horizon join them too
    max_predictor_rows: int = 400_000  # (user, cutoff, candidate) rows used to fit the predictor
    # discover head (ml_tasks.model.discover): candidates outside the user's history
    discover_popular_candidates: int = 100  # the most popular categories of the last horizon
    discover_covisit_candidates: int = 50  # the top co-visitation categories from the recent ones
    discover_markov_candidates: int = 20  # the top transitions from the last category
    discover_lstm_candidates: int = 30  # the top of each LSTM head (model only, not the ablation)
    discover_c: float = 1.0  # inverse L2 strength of its logistic regression
    discover_estimator: str = "logistic"  # or "boosting" (gradient-boosted trees)
    # baselines / updates
    half_life_hours: float = 72.0
    half_life_grid: tuple[float, ...] = (6.0, 12.0, 24.0, 48.0, 72.0, 120.0, 168.0, 336.0)
    fine_tune_epochs: int = 1  # the periodic update: epochs over the samples since the last fit
    extra: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, overrides: dict[str, Any] | None = None, **more: Any) -> ModelConfig:
        """A copy with the given fields replaced; ``None`` values leave a field as it is."""
        values = {**(overrides or {}), **more}
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (tuples as lists), for run state, model files and MLflow."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ModelConfig:
        """The inverse of :meth:`to_json`; names that are no longer fields are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def parse_model_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` strings (the CLI's ``--set``) -> :class:`ModelConfig` overrides.

    ``VALUE`` is read as JSON (``true``, ``0.5``, ``[64, 64]``, ``null``) or else taken as a string, then
    checked by :func:`validate_model_settings`.
    """
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise PipelineError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return validate_model_settings(values)


def validate_model_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Check ``{field: value}`` against :class:`ModelConfig`'s fields and types; lists become tuples.

    An unknown name or a value of the wrong type raises :class:`ml_tasks.errors.PipelineError` naming
    the field and what it accepts (the CLI's ``--set`` and the DAGs' ``model_settings`` param).
    """
    if not isinstance(values, dict):
        raise PipelineError(f"model settings must be a JSON object of ModelConfig fields, got {values!r}")
    known = {f.name: str(f.type) for f in fields(ModelConfig) if f.name != "extra"}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise PipelineError(f"unknown model setting {name!r}; known: {', '.join(sorted(known))}")
        kind = known[name]
        if not _accepts(kind, value):
            shown = value if isinstance(value, str) else json.dumps(value)
            raise PipelineError(f"model setting {name} takes {kind}, got {shown!r}")
        if kind.startswith("float") and value is not None:
            value = float(value)
        out[name] = tuple(value) if isinstance(value, list | tuple) else value
    return out


def _accepts(kind: str, value: Any) -> bool:
    """Does a JSON value fit a ``ModelConfig`` field annotated ``kind`` (e.g. ``"float | None"``)?"""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if value is None:
        return "None" in kind
    if kind.startswith("tuple["):
        element = str if kind.startswith("tuple[str") else None
        return isinstance(value, list | tuple) and all(
            isinstance(v, str) if element is str else number(v) for v in value
        )
    if kind.startswith("bool"):
        return isinstance(value, bool)
    if kind.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind.startswith("float"):
        return number(value)
    return kind.startswith("str") and isinstance(value, str)
