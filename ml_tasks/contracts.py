"""One place for the names and constants shared by the warehouse, the model and the DAGs.

The Parquet exports written by dbt (see ``dbt_project/models/marts/ml``) are the contract between
the warehouse and the ML code. Their file names and columns are listed here; the dbt contracts
enforce the same columns on the warehouse side.
"""

from __future__ import annotations

# --- canonical events --------------------------------------------------------------------------
EVENT_TYPES: tuple[str, ...] = ("view", "search", "fav", "cart", "buy", "review")
#: index of each event type in model inputs; 0 is padding
EVENT_TYPE_INDEX: dict[str, int] = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}
#: EVALUATION.md event-type weights (search is not listed there and counts like a view)
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "search": 1.0,
    "fav": 2.0,
    "cart": 3.0,
    "buy": 4.0,
    "review": 1.0,
}
CANONICAL_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "category_id", "event_type", "event_ts")
SOURCE_FORMATS: tuple[str, ...] = ("generic", "taobao", "movielens")
#: ingest: a file with a larger share of rejected rows fails as a whole (``--max-reject-ratio``)
MAX_REJECT_RATIO = 0.2
#: ingest_events: folders (os.pathsep-separated) besides the landing folder that ``events_path`` may name
INGEST_ROOTS_ENV = "IEP_INGEST_ROOTS"

# --- category vocabulary -----------------------------------------------------------------------
#: category_idx 0 is the padding value in sequences; real categories are 1..n
PAD_INDEX = 0

# --- Parquet exports (file stem -> columns) ----------------------------------------------------
EXPORT_EVENTS = "events"
EXPORT_CATEGORIES = "dim_categories"
EXPORT_SEQUENCES = "ml_sequences"
EXPORT_PAIR_FEATURES = "ml_pair_features"
EXPORT_PROTOCOL = "ml_protocol"

EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    # clean, deduplicated events, one row per event
    EXPORT_EVENTS: (
        "user_id",  # varchar
        "item_id",  # varchar
        "category_id",  # varchar
        "category_idx",  # integer, 1..n (dim_categories)
        "event_type",  # varchar, one of EVENT_TYPES
        "event_at",  # timestamp (UTC)
        "event_ts",  # bigint, epoch seconds
    ),
    # one row per category; category_idx is stable: ordered by first appearance, then id, so
    # new data appends new indexes and never renumbers old ones
    EXPORT_CATEGORIES: (
        "category_idx",  # integer, 1..n
        "category_id",  # varchar
        "first_event_ts",  # bigint, epoch seconds
        "n_events",  # bigint
        "n_users",  # bigint
    ),
    # one row per (user, cutoff); every array holds the last L events strictly before the cutoff,
    # oldest first; labels are the categories touched in [cutoff, cutoff + horizon)
    EXPORT_SEQUENCES: (
        "user_id",  # varchar
        "cutoff_ts",  # bigint, epoch seconds
        "split",  # 'train' | 'val' | 'test' | 'score' (see SPLITS)
        "n_history_events",  # bigint, all events of the user before the cutoff
        "seq_category_idx",  # integer[]
        "seq_event_type_idx",  # integer[] (EVENT_TYPE_INDEX)
        "seq_gap_hours",  # double[], hours from the event to the cutoff (> 0)
        "label_category_idx",  # integer[], distinct categories in the label window (empty: none)
        "label_event_counts",  # integer[], events per label category, aligned with the above
    ),
    # one row per (user, cutoff, category the user touched before the cutoff)
    EXPORT_PAIR_FEATURES: (
        "user_id",
        "cutoff_ts",
        "category_idx",
        "n_events",  # events of the user on the category before the cutoff
        "weighted_events",  # sum of EVENT_WEIGHTS
        "decay_24h",  # sum of weight * 0.5 ** (age_hours / 24)
        "decay_72h",
        "decay_168h",
        "hours_since_last",  # hours from the last event on the category to the cutoff
        "events_since_last",  # user's events after the last one on this category (0 = most recent)
        "n_events_last_horizon",  # user's events on the category in [cutoff - horizon, cutoff)
    ),
    # one row: the global temporal split of EVALUATION.md
    EXPORT_PROTOCOL: (
        "max_ts",  # latest event timestamp in the data
        "test_cutoff_ts",  # max_ts - horizon
        "val_cutoff_ts",  # test_cutoff_ts - horizon
        "score_cutoff_ts",  # max_ts + 1 s: scoring sees every event
        "horizon_hours",
        "cutoff_step_hours",
        "sequence_length",
    ),
}

#: split of a (user, cutoff) sample under the global temporal protocol:
#:   train: cutoff + horizon <= val cutoff (label window ends before validation starts)
#:   val:   val cutoff < cutoff + horizon <= test cutoff (the val cutoff itself is the one used
#:          for selection; all of them may be added to the final fit)
#:   test:  cutoff == test cutoff
#:   score: cutoff == score cutoff (no label), for batch scoring
#: cutoffs strictly between the val and test cutoffs are not exported (their labels cross T_test).
SPLITS: tuple[str, ...] = ("train", "val", "test", "score")

# --- predictor inputs --------------------------------------------------------------------------
PAIR_FEATURE_COLUMNS: tuple[str, ...] = EXPORT_COLUMNS[EXPORT_PAIR_FEATURES][3:]

# --- Airflow pools (the DAGs run their tasks in them; devstack, make run and the tests create them) ----
#: every task that writes the DuckDB warehouse runs in this pool; one slot, because DuckDB has one writer
WAREHOUSE_POOL = "warehouse_writer"
#: every task that changes the model registry (new versions, aliases) runs in this pool: the weekly
#: training and the daily update never move the champion alias at the same time
REGISTRY_POOL = "model_registry"
#: name -> (slots, description)
POOLS: dict[str, tuple[int, str]] = {
    WAREHOUSE_POOL: (1, "DuckDB warehouse: one writer at a time"),
    REGISTRY_POOL: (1, "MLflow model registry: one version/alias writer at a time"),
}

# --- MLflow ------------------------------------------------------------------------------------
EXPERIMENT_NAME = "user_interest"
REGISTERED_MODEL_NAME = "user_interest_model"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
METRIC_NAMES: tuple[str, ...] = ("ndcg@10", "recall@10", "mrr")
MODEL_NAME = "lstm_pca_predictor"
ABLATION_NAME = "predictor_without_lstm"
BASELINE_NAMES: tuple[str, ...] = (
    "popularity",
    "user_frequency",
    "recency_decay",
    "last_category",
    "markov",
    "covisitation",
)
