"""Model benchmark: LSTM training throughput and interest-feature extraction throughput.

Writes ``bench/results/model.json``:

- ``train_sequences_per_s``: (user, cutoff) sequences per second of LSTM training, steady state
  (epochs after the first; the first includes graph tracing, reported as ``first_epoch_s``);
- ``extract_users_per_s``: users per second for the interest features (one forward pass: hidden
  state, both heads) at the score cutoff;
- ``score_users_per_s``: users per second for the whole ranking (features, candidates, predictor);
- ``fit_seconds``: ``ml_tasks.model.fit`` end to end (LSTM, PCA, predictor and ablation);
- the data size, configuration and machine (CPU count) they were measured on.

The data is the synthetic generator's default log (3,000 users, 14 days, ~250k events), turned into
the export frames in memory (``ModelData.from_events``, the warehouse's definitions), so the
benchmark needs no warehouse. Usage::

    python bench/bench_model.py [--users 3000] [--days 14] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = REPO / "bench" / "results" / "model.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import keras

    from ml_tasks.config import ModelConfig
    from ml_tasks.data.synthetic import SyntheticConfig, generate
    from ml_tasks.model import lstm
    from ml_tasks.model.dataset import ModelData
    from ml_tasks.model.fit import fit
    from ml_tasks.model.predictor import popularity_table
    from ml_tasks.model.score import score
    from ml_tasks.model.sequences import Vocabulary, encode_sequences

    started = time.perf_counter()
    events, _truth = generate(SyntheticConfig(n_users=args.users, days=args.days))
    data = ModelData.from_events(events)
    prep_s = time.perf_counter() - started
    config = replace(ModelConfig(), epochs=args.epochs, early_stopping_patience=0)

    # training throughput: the LSTM alone on the selection fit's rows, epoch by epoch
    lstm.set_seed(config.seed)
    vocab = Vocabulary.from_events(data.events, data.val_cutoff_ts, config.min_category_events)
    rows = data.sequences[
        (data.sequences["cutoff_ts"] <= data.val_cutoff_ts) & (data.sequences["split"] != "score")
    ]
    if config.max_train_sequences and len(rows) > config.max_train_sequences:
        rows = rows.sample(config.max_train_sequences, random_state=config.seed)
    arrays = encode_sequences(rows, vocab, data.sequence_length)
    model = lstm.build_model(vocab.n_outputs, config, data.sequence_length)
    lstm.compile_model(model, config)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    timer = EpochTimer()
    from ml_tasks.model.sequences import make_dataset

    ds = make_dataset(
        arrays, vocab.n_outputs, config.batch_size, shuffle=True, next_positions=config.next_positions
    )
    model.fit(ds, epochs=args.epochs, verbose=0, callbacks=[timer], shuffle=False)
    steady = timer.seconds[1:] or timer.seconds
    train_sps = len(arrays) / (sum(steady) / len(steady))

    # the whole fit, then extraction and scoring throughput at the score cutoff
    t0 = time.perf_counter()
    fitted = fit(data, config, final=True)
    fit_s = time.perf_counter() - t0
    score_rows = data.sequences[data.sequences["split"] == "score"].reset_index(drop=True)
    pf = data.pair_features[data.pair_features["cutoff_ts"] == data.protocol["score_cutoff_ts"]]
    score_arrays = encode_sequences(score_rows, fitted.vocab, fitted.sequence_length, with_labels=False)
    lstm.readout(fitted.keras_model, score_arrays.subset(slice(0, 64)))  # warm-up (compilation)
    t0 = time.perf_counter()
    lstm.readout(fitted.keras_model, score_arrays)
    extract_s = time.perf_counter() - t0
    lstm.forget_readouts(fitted.keras_model)  # scoring's time includes its forward pass
    t0 = time.perf_counter()
    ranked = score(fitted, score_rows, pf, top_n=20, popularity=popularity_table(pf))
    score_s = time.perf_counter() - t0

    n_users = int(score_rows["user_id"].nunique())
    result = {
        "train_sequences_per_s": round(train_sps, 1),
        "first_epoch_s": round(timer.seconds[0], 2),
        "steady_epoch_s": round(sum(steady) / len(steady), 2),
        "n_train_sequences": len(arrays),
        "extract_users_per_s": round(n_users / extract_s, 1),
        "score_users_per_s": round(n_users / score_s, 1),
        "n_scored_rows": len(ranked),
        "fit_seconds": round(fit_s, 1),
        "n_users": n_users,
        "n_events": int(len(data.events)),
        "n_sequences": int(len(data.sequences)),
        "n_categories": int(len(data.categories)),
        "data_prep_seconds": round(prep_s, 1),
        "epochs": args.epochs,
        "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))
    return result


if __name__ == "__main__":
    main()
