"""The interest model end to end: LSTM -> hidden states -> PCA -> predictor, fitted, saved, applied.

Pure: frames and config in, models and frames out; no mlflow/duckdb/airflow. Importing this module
is cheap: TensorFlow/Keras load on the first call that needs them (``ml_tasks.lstm``).

Time discipline (``shared/docs/EVALUATION.md``): ``fit(data, config, final=False)`` is the *selection*
fit: nothing it uses lies at or after the validation cutoff ``T_val`` (LSTM inputs and next-event
targets before ``T_val``, label windows ending at or before it); early stopping watches the
``T_val`` samples' next-window loss, and the fitted model is evaluated at ``T_val``. ``final=True``
moves the limit to the test cutoff ``T_test`` (label windows of the validation cutoffs are added),
trains for a fixed number of epochs (the selection fit's best epoch), and is evaluated at ``T_test``.

Public API::

    ModelData(events, categories, sequences, pair_features, protocol)     # the five exports
    ModelData.from_dir(export_dir) -> ModelData                          # reads Parquet only
    ModelData.from_events(events, horizon_hours=48, cutoff_step_hours=12, sequence_length=50)
                                                          # the same frames built in memory (tests)
    fit(data, config, final=False, epochs=None) -> FittedInterestModel
    select_and_fit(data, config) -> (final_model, selection_model)
    fine_tune(model, data, config=None) -> FittedInterestModel          # warm start, newest window
    score(model, sequences_df, pair_features_df, use_lstm=True, top_n=50, popularity=None)
        -> DataFrame[user_id, cutoff_ts, category_idx, score, rank]
    interest_embeddings(model, sequences_df) -> DataFrame[user_id, cutoff_ts, pc_1..pc_k]
    FittedInterestModel.save(dir) / FittedInterestModel.load(dir)     # lstm.keras, *.joblib, model.json
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.config import ModelConfig
from ml_tasks.features import (
    EXPORT_CATEGORIES,
    EXPORT_EVENTS,
    EXPORT_PAIR_FEATURES,
    EXPORT_PROTOCOL,
    EXPORT_SEQUENCES,
)
from ml_tasks.predictor import (
    InterestPredictor,
    LstmBlock,
    candidate_pairs,
    feature_matrix,
    pair_labels,
    popularity_from_events,
    popularity_table,
    score_matrix,
)
from ml_tasks.sequences import GAP_SCALE, SequenceArrays, Vocabulary, encode_sequences

MODEL_FILES = ("lstm.keras", "pca.joblib", "predictor.joblib", "ablation.joblib", "model.json")


# --- data ----------------------------------------------------------------------------------------
@dataclass
class ModelData:
    """The five Parquet exports of ``features.EXPORT_COLUMNS`` as pandas frames."""

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
        from ml_tasks import online
        from ml_tasks.features import EVENT_TYPE_INDEX

        ev = events.copy()
        ev["user_id"] = ev["user_id"].astype(str)
        ev["category_id"] = ev["category_id"].astype(str)
        ev["event_ts"] = ev["event_ts"].astype("int64")
        if "item_id" not in ev:
            ev["item_id"] = ""
        ev = ev.drop_duplicates().sort_values(
            ["user_id", "event_ts", "category_id", "event_type"], kind="stable"
        )
        first = ev.groupby("category_id")["event_ts"].agg(["min", "size"]).reset_index()
        first = first.sort_values(["min", "category_id"]).reset_index(drop=True)
        first["category_idx"] = np.arange(1, len(first) + 1, dtype=np.int32)
        ev["category_idx"] = ev["category_id"].map(
            dict(zip(first["category_id"], first["category_idx"], strict=True))
        )
        ev["category_idx"] = ev["category_idx"].astype(np.int32)
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
            rows = []
            for user, g in by_user.items():
                ts = g["event_ts"].to_numpy()
                n = int(np.searchsorted(ts, cutoff, side="left"))
                if n == 0:
                    continue
                if split == "score":
                    labels, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
                else:
                    end = int(np.searchsorted(ts, cutoff + h, side="left"))
                    labels, counts = np.unique(g["category_idx"].to_numpy()[n:end], return_counts=True)
                    if not len(labels):
                        continue
                tail = g.iloc[max(0, n - sequence_length) : n]
                rows.append(
                    {
                        "user_id": user,
                        "cutoff_ts": int(cutoff),
                        "split": split,
                        "n_history_events": n,
                        "seq_category_idx": tail["category_idx"].to_numpy(dtype=np.int64).tolist(),
                        "seq_event_type_idx": tail["event_type"]
                        .map(EVENT_TYPE_INDEX)
                        .to_numpy(dtype=np.int64)
                        .tolist(),
                        "seq_gap_hours": ((cutoff - tail["event_ts"].to_numpy()) / 3600.0).tolist(),
                        "label_category_idx": labels.tolist(),
                        "label_event_counts": counts.tolist(),
                    }
                )
            if not rows:
                continue
            seq_rows.extend(rows)
            cut = pd.Series({r["user_id"]: r["cutoff_ts"] for r in rows})
            pair_parts.append(online.pair_features_at(ev[ev["user_id"].isin(cut.index)], cut, horizon_hours))
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


# --- the fitted model ----------------------------------------------------------------------------
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
        meta = {
            "config": _config_to_json(self.config),
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

        import ml_tasks.lstm  # noqa: F401  (registers the custom layers and losses)

        d = Path(directory)
        meta = json.loads((d / "model.json").read_text())
        return cls(
            keras_model=keras.saving.load_model(d / "lstm.keras", compile=False),
            vocab=Vocabulary(np.asarray(meta["vocabulary"], dtype=np.int64)),
            pca=joblib.load(d / "pca.joblib"),
            predictor=joblib.load(d / "predictor.joblib"),
            ablation=joblib.load(d / "ablation.joblib"),
            config=_config_from_json(meta["config"]),
            sequence_length=int(meta["sequence_length"]),
            horizon_hours=int(meta["horizon_hours"]),
            trained_until_ts=int(meta["trained_until_ts"]),
            info=meta.get("info", {}),
        )


def _config_to_json(config: ModelConfig) -> dict[str, Any]:
    return _jsonable(asdict(config))


def _config_from_json(values: dict[str, Any]) -> ModelConfig:
    known = {f.name: f for f in fields(ModelConfig)}
    kwargs = {}
    for k, v in values.items():
        if k not in known:
            continue
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return ModelConfig(**kwargs)


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


# --- fitting -------------------------------------------------------------------------------------
def _usable_window(rows: pd.DataFrame, limit_ts: int, horizon_hours: int) -> np.ndarray:
    """Label windows that end at or before ``limit_ts`` and hold at least one event."""
    ends_ok = (rows["cutoff_ts"].to_numpy() + horizon_hours * 3600) <= limit_ts
    has = rows["label_category_idx"].map(lambda x: x is not None and len(x) > 0).to_numpy(dtype=bool)
    return ends_ok & has


def _lstm_training_rows(
    data: ModelData, limit_ts: int, config: ModelConfig, since_ts: int | None = None
) -> pd.DataFrame:
    """The samples with a cutoff in ``(since_ts, limit_ts]``, at most ``max_train_sequences`` of them."""
    seqs = data.sequences
    rows = seqs[(seqs["cutoff_ts"] <= limit_ts) & (seqs["split"] != "score")]
    if since_ts is not None:
        rows = rows[rows["cutoff_ts"] > since_ts]
    if config.max_train_sequences and len(rows) > config.max_train_sequences:
        rows = rows.sample(config.max_train_sequences, random_state=config.seed)
    return rows.sort_values(["user_id", "cutoff_ts"]).reset_index(drop=True)


def _predictor_rows(data: ModelData, limit_ts: int, cutoffs: list[int] | None = None) -> pd.DataFrame:
    seqs = data.sequences
    rows = seqs[seqs["split"] != "score"]
    if cutoffs is not None:
        rows = rows[rows["cutoff_ts"].isin(cutoffs)]
    rows = rows[_usable_window(rows, limit_ts, data.horizon_hours)]
    return rows.sort_values(["cutoff_ts", "user_id"]).reset_index(drop=True)


def _subsample_rows(rows: pd.DataFrame, n_pairs_est: float, max_pairs: int, seed: int) -> pd.DataFrame:
    if n_pairs_est <= max_pairs:
        return rows
    frac = max_pairs / n_pairs_est
    return (
        rows.sample(frac=frac, random_state=seed).sort_values(["cutoff_ts", "user_id"]).reset_index(drop=True)
    )


def _stage_cutoff(data: ModelData, limit_ts: int) -> int:
    """The latest sample cutoff whose label window ends at or before ``limit_ts``."""
    cutoffs = data.sequences["cutoff_ts"].unique()
    ok = cutoffs[cutoffs + data.horizon_hours * 3600 <= limit_ts]
    if not len(ok):
        raise ValueError(f"no sample cutoff has a label window ending by {limit_ts}; too little history")
    return int(ok.max())


def _train_lstm(
    data: ModelData,
    config: ModelConfig,
    limit_ts: int,
    vocab: Vocabulary,
    epochs: int,
    early_stopping: bool,
    keras_model: Any = None,
    rows: pd.DataFrame | None = None,
    learning_rate: float | None = None,
    holdout_until_ts: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train on samples up to ``limit_ts``; early stopping on the next-event loss of the events in
    ``[limit_ts, holdout_until_ts)`` (read from the samples at ``holdout_until_ts``), never trained on."""
    from ml_tasks import lstm

    rows = _lstm_training_rows(data, limit_ts, config) if rows is None else rows
    arrays = encode_sequences(rows, vocab, data.sequence_length)
    arrays.window_weight = arrays.window_weight * _usable_window(rows, limit_ts, data.horizon_hours)
    val = None
    if early_stopping and holdout_until_ts is not None and holdout_until_ts > limit_ts:
        val_rows = data.sequences[data.sequences["cutoff_ts"] == holdout_until_ts]
        val = encode_sequences(val_rows, vocab, data.sequence_length)
        held_hours = (holdout_until_ts - limit_ts) / 3600.0
        gap_hours = np.expm1(val.gaps[:, :, 0] * GAP_SCALE)
        target_after_limit = np.zeros_like(val.next_target, dtype=bool)
        target_after_limit[:, :-1] = gap_hours[:, 1:] < held_hours
        val.next_target = np.where(target_after_limit & (val.cat > 0), val.next_target, 0)
        val.window_weight = np.zeros_like(val.window_weight)
        val = val.subset(np.flatnonzero((val.next_target > 0).any(axis=1)))
        # and the next-window loss of the samples at the limit (label windows never trained on)
        win_rows = data.sequences[data.sequences["cutoff_ts"] == limit_ts]
        win = encode_sequences(win_rows, vocab, data.sequence_length)
        win.window_weight = win.window_weight * _usable_window(win_rows, holdout_until_ts, data.horizon_hours)
        win.next_target = np.zeros_like(win.next_target)
        val = SequenceArrays.concat([val, win.subset(np.flatnonzero(win.window_weight > 0))])
    if keras_model is None:
        keras_model = lstm.build_model(vocab.n_outputs, config, data.sequence_length)
    lstm.compile_model(keras_model, config, learning_rate)
    info = lstm.train(
        keras_model, arrays, val, config, vocab.n_outputs, epochs=epochs, early_stopping=early_stopping
    )
    info["n_train_sequences"] = len(arrays)
    info["n_window_targets"] = int(arrays.window_weight.sum())
    return keras_model, info


def _lstm_block(model: FittedInterestModel, arrays: SequenceArrays, out: dict | None = None) -> LstmBlock:
    from ml_tasks import lstm

    out = lstm.readout(model.keras_model, arrays) if out is None else out
    z = model.pca.transform(out["state"])
    kernel, _bias = lstm.category_vectors(model.keras_model)
    dirs = model.pca.components_ @ kernel
    parts = tuple(model.config.lstm_features)
    return LstmBlock(out["window"], z, dirs, model.vocab, parts, next_log_probs=out["next"])


def _fit_heads(
    model: FittedInterestModel,
    data: ModelData,
    limit_ts: int,
    config: ModelConfig,
    predictor_cutoffs: list[int] | None = None,
) -> FittedInterestModel:
    """PCA on the predictor samples' hidden states, then the predictor and its ablation."""
    from ml_tasks import lstm
    from ml_tasks.pca import fit_pca

    rows = _predictor_rows(data, limit_ts, predictor_cutoffs)
    pop = popularity_from_events(data.events, rows["cutoff_ts"].unique(), data.horizon_hours)
    n_hist = data.pair_features.groupby(["user_id", "cutoff_ts"]).size().mean() if len(rows) else 0
    est_pairs = len(rows) * (n_hist + config.n_popular_candidates + config.top_k_candidates)
    rows = _subsample_rows(rows, est_pairs, config.max_predictor_rows, config.seed)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length)
    out = lstm.readout(model.keras_model, arrays)
    model.pca, curve = fit_pca(out["state"], config.pca_variance, seed=config.seed)
    block = _lstm_block(model, arrays, out)
    pf = data.pair_features
    pairs = candidate_pairs(rows, pf, pop, config.n_popular_candidates, block, config.top_k_candidates)
    x, names = feature_matrix(pairs, rows, pf, pop, block)
    y = pair_labels(pairs, rows)
    model.predictor = InterestPredictor(config.predictor, config.predictor_c, config.seed).fit(x, y, names)
    pairs_a = candidate_pairs(rows, pf, pop, config.n_popular_candidates)
    xa, names_a = feature_matrix(pairs_a, rows, pf, pop)
    model.ablation = InterestPredictor(config.predictor, config.predictor_c, config.seed).fit(
        xa, pair_labels(pairs_a, rows), names_a
    )
    model.info.update(
        {
            "pca": curve,
            "n_predictor_samples": len(rows),
            "n_predictor_pairs": len(pairs),
            "positive_rate": float(y.mean()),
            "coefficients": model.predictor.coefficients(),
        }
    )
    return model


def fit(
    data: ModelData, config: ModelConfig, final: bool = False, epochs: int | None = None
) -> FittedInterestModel:
    """Fit the whole model; nothing at or after ``limit`` (``T_val``, or ``T_test`` when ``final``) is used.

    Two stages in time, so the predictor learns from LSTM outputs on behaviour the LSTM never saw
    (the same situation as at scoring time): the LSTM is trained on samples up to
    ``lstm_limit = limit - horizon`` (inputs, next-event targets and label windows before it; early
    stopping on the next-window loss of the samples at ``lstm_limit``), and the PCA and the predictor
    are fitted on the samples at ``lstm_limit``, whose label windows end at ``limit``.
    """
    from ml_tasks import lstm

    start = time.perf_counter()
    lstm.set_seed(config.seed)
    limit = data.test_cutoff_ts if final else data.val_cutoff_ts
    lstm_limit = _stage_cutoff(data, limit)
    vocab = Vocabulary.from_events(data.events, lstm_limit, config.min_category_events)
    keras_model, train_info = _train_lstm(
        data,
        config,
        lstm_limit,
        vocab,
        epochs or config.epochs,
        early_stopping=config.early_stopping_patience > 0,
        holdout_until_ts=limit,
    )
    model = FittedInterestModel(
        keras_model=keras_model,
        vocab=vocab,
        pca=None,
        predictor=InterestPredictor(),
        ablation=InterestPredictor(),
        config=config,
        sequence_length=data.sequence_length,
        horizon_hours=data.horizon_hours,
        trained_until_ts=limit,
        info={
            "final": final,
            "seed": config.seed,
            "lstm": train_info,
            "lstm_limit_ts": lstm_limit,
            "vocabulary_size": vocab.size,
        },
    )
    cutoffs = [lstm_limit] if config.predictor_samples == "stage" else None
    _fit_heads(model, data, limit, config, predictor_cutoffs=cutoffs)
    if config.catch_up_epochs > 0 and lstm_limit < limit:
        _catch_up(model, data, config, lstm_limit, limit)
    model.info["fit_seconds"] = time.perf_counter() - start
    return model


def _catch_up(
    model: FittedInterestModel, data: ModelData, config: ModelConfig, since_ts: int, limit_ts: int
) -> None:
    """Continue training the LSTM on the samples up to ``limit_ts`` (everything the model may know
    when it scores at ``limit_ts``), so it scores with the same up-to-date knowledge it had at
    ``since_ts`` when the predictor learned from it. PCA and predictor stay as fitted."""
    seqs = data.sequences
    rows = seqs[(seqs["cutoff_ts"] <= limit_ts) & (seqs["split"] != "score")]
    if config.catch_up_window_only:
        rows = rows[rows["cutoff_ts"] > since_ts - data.horizon_hours * 3600]
    if config.max_train_sequences and len(rows) > config.max_train_sequences:
        rows = rows.sample(config.max_train_sequences, random_state=config.seed)
    rows = rows.sort_values(["user_id", "cutoff_ts"]).reset_index(drop=True)
    model.keras_model, info = _train_lstm(
        data,
        config,
        limit_ts,
        model.vocab,
        config.catch_up_epochs,
        early_stopping=False,
        keras_model=model.keras_model,
        rows=rows,
        learning_rate=config.learning_rate * config.catch_up_lr_factor,
    )
    model.info["catch_up"] = {k: v for k, v in info.items() if k != "history"} | {"history": info["history"]}


def select_and_fit(data: ModelData, config: ModelConfig) -> tuple[FittedInterestModel, FittedInterestModel]:
    """The selection fit (up to ``T_val``, evaluated at ``T_val``) and the final fit (up to ``T_test``)."""
    return fit(data, config, final=True), fit(data, config, final=False)


def fine_tune(
    model: FittedInterestModel, data: ModelData, config: ModelConfig | None = None
) -> FittedInterestModel:
    """Continue training a copy of ``model``'s LSTM on the samples that arrived since it was fitted,
    then refit PCA and predictor: the periodic update, the same two stages in time as :func:`fit`.

    With ``limit = T_test`` of ``data`` and ``lstm_limit`` the latest sample cutoff whose label window
    ends by ``limit``: the LSTM continues on the samples with a cutoff in ``(previous lstm_limit,
    lstm_limit]`` (label windows cut at ``lstm_limit``; ``fine_tune_epochs`` at half the learning
    rate), and PCA and predictor are refitted on the samples at ``lstm_limit`` (as :func:`fit` does
    with ``predictor_samples="stage"``), whose label windows the LSTM never saw. The vocabulary stays
    the model's (new categories share the out-of-vocabulary bucket).
    """
    import keras

    from ml_tasks import lstm

    config = config or model.config
    start = time.perf_counter()
    lstm.set_seed(config.seed)
    limit = data.test_cutoff_ts
    lstm_limit = _stage_cutoff(data, limit)
    previous = int(model.info.get("lstm_limit_ts", model.trained_until_ts - model.horizon_hours * 3600))
    rows = _lstm_training_rows(data, lstm_limit, config, since_ts=previous)
    km = keras.models.clone_model(model.keras_model)
    km.set_weights(model.keras_model.get_weights())
    # nothing new since the last fit: the LSTM stays as it is (the heads are still refitted)
    train_info: dict[str, Any] = {"history": {}, "best_epoch": 0, "epochs_run": 0, "seconds": 0.0,
                                  "n_train_sequences": 0, "n_window_targets": 0}
    if len(rows) and config.fine_tune_epochs > 0:
        km, train_info = _train_lstm(
            data,
            config,
            lstm_limit,
            model.vocab,
            config.fine_tune_epochs,
            early_stopping=False,
            keras_model=km,
            rows=rows,
            learning_rate=config.learning_rate / 2,
        )
    tuned = FittedInterestModel(
        keras_model=km,
        vocab=model.vocab,
        pca=None,
        predictor=InterestPredictor(),
        ablation=InterestPredictor(),
        config=config,
        sequence_length=model.sequence_length,
        horizon_hours=model.horizon_hours,
        trained_until_ts=limit,
        info={
            "final": True,
            "seed": config.seed,
            "lstm": train_info,
            "lstm_limit_ts": lstm_limit,
            "vocabulary_size": model.vocab.size,
            "fine_tuned_from": model.trained_until_ts,
            "fine_tuned_since_ts": previous,
        },
    )
    cutoffs = [lstm_limit] if config.predictor_samples == "stage" else None
    _fit_heads(tuned, data, limit, config, predictor_cutoffs=cutoffs)
    tuned.info["fit_seconds"] = time.perf_counter() - start
    return tuned


# --- applying ------------------------------------------------------------------------------------
def score_pairs(
    model: FittedInterestModel,
    rows: pd.DataFrame,
    pair_features: pd.DataFrame,
    popularity: pd.DataFrame | None = None,
    use_lstm: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candidate pairs of ``rows`` (``row`` = position in ``rows``) and their predictor scores."""
    rows = rows.reset_index(drop=True)
    pop = popularity_table(pair_features) if popularity is None else popularity
    cfg = model.config
    if use_lstm:
        arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
        block = _lstm_block(model, arrays)
        pairs = candidate_pairs(
            rows, pair_features, pop, cfg.n_popular_candidates, block, cfg.top_k_candidates
        )
        x, _ = feature_matrix(pairs, rows, pair_features, pop, block)
        return pairs, model.predictor.predict(x)
    pairs = candidate_pairs(rows, pair_features, pop, cfg.n_popular_candidates)
    x, _ = feature_matrix(pairs, rows, pair_features, pop)
    return pairs, model.ablation.predict(x)


def score(
    model: FittedInterestModel,
    sequences_df: pd.DataFrame,
    pair_features_df: pd.DataFrame,
    use_lstm: bool = True,
    top_n: int | None = 50,
    popularity: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Ranked categories per (user, cutoff): ``user_id, cutoff_ts, category_idx, score, rank`` (1 = best).

    The ranking covers every category seen before the cutoff (candidates by predictor score, the
    rest below them in popularity order, score ``-1``); ``top_n`` keeps the best ``n`` per sample.
    ``popularity`` (a :func:`ml_tasks.predictor.popularity_table` frame) defaults to the one derived
    from ``pair_features_df``; pass one when scoring a handful of users.
    """
    from ml_tasks.metrics import rank_order, tie_break_rank

    rows = sequences_df.reset_index(drop=True)
    pop = popularity_table(pair_features_df) if popularity is None else popularity
    pairs, scores = score_pairs(model, rows, pair_features_df, pop, use_lstm)
    out = []
    for cutoff, idx in rows.groupby("cutoff_ts").indices.items():
        seen = pop[pop["cutoff_ts"] == cutoff]
        cands = seen["category_idx"].to_numpy()
        sel = pairs["row"].isin(idx).to_numpy()
        sub = pairs[sel].copy()
        sub["row"] = pd.Index(idx).get_indexer(sub["row"])
        mat = score_matrix(sub, scores[sel], len(idx), cands)
        order = rank_order(mat, tie_break_rank(cands, seen["pop_horizon"].to_numpy()))
        n = order.shape[1] if top_n is None else min(top_n, order.shape[1])
        top = order[:, :n]
        out.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(rows["user_id"].to_numpy()[idx], n),
                    "cutoff_ts": int(cutoff),
                    "category_idx": cands[top].ravel(),
                    "score": np.take_along_axis(mat, top, axis=1).ravel(),
                    "rank": np.tile(np.arange(1, n + 1), len(idx)),
                }
            )
        )
    cols = ["user_id", "cutoff_ts", "category_idx", "score", "rank"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def interest_embeddings(model: FittedInterestModel, sequences_df: pd.DataFrame) -> pd.DataFrame:
    """The PCA interest vector of every (user, cutoff): ``user_id, cutoff_ts, pc_1..pc_k``."""
    from ml_tasks import lstm

    rows = sequences_df.reset_index(drop=True)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
    z = model.pca.transform(lstm.hidden_states(model.keras_model, arrays).astype(np.float64))
    out = pd.DataFrame(z, columns=[f"pc_{j + 1}" for j in range(z.shape[1])])
    out.insert(0, "cutoff_ts", rows["cutoff_ts"].to_numpy(dtype=np.int64))
    out.insert(0, "user_id", rows["user_id"].astype(str).to_numpy())
    return out


def with_overrides(config: ModelConfig, **overrides: Any) -> ModelConfig:
    """``dataclasses.replace`` that ignores ``None`` values (CLI convenience)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
