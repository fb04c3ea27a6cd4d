"""The dbt project end to end: build on small fixtures and the real samples, contracts, incremental
runs, point-in-time correctness checked independently in pandas, exports and failure messages.

dbt runs as a subprocess through ``ml_tasks.data.warehouse.build``; the tests share one dbt target folder in
a temporary directory (partial parsing stays warm, the repository's ``dbt_project/target`` is untouched).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from ml_tasks import contracts
from ml_tasks.config import Paths, WarehouseConfig
from ml_tasks.data import warehouse
from ml_tasks.data.ingest import ingest_file

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "events_small.csv"
NEXT_DAY = FIXTURES / "events_next_day.csv"
CONFIG = WarehouseConfig()
#: the tables dbt materialises that outlive a run (the incremental ones among them) and the exported
#: fct_events view, compared between incremental and full-refresh builds
TABLES = (
    "int_events_enriched", "fct_events", "dim_categories", "int_categories_indexed", "int_user_events_listed",
    "int_user_category_days_aggregated", "fct_user_category_interest", "int_protocol_cutoffs", "ml_protocol",
    "ml_sequences", "ml_pair_features",
)


@pytest.fixture(scope="session")
def dbt_target(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dbt-target")


@pytest.fixture
def paths(tmp_path, monkeypatch, dbt_target) -> Paths:
    monkeypatch.setenv("DBT_TARGET_PATH", str(dbt_target))
    monkeypatch.setenv("DBT_LOG_PATH", str(dbt_target / "logs"))
    monkeypatch.delenv("IEP_PSEUDONYMISE_SECRET", raising=False)
    return Paths.from_env(data_dir=tmp_path, warehouse=tmp_path / "wh.duckdb", export_dir=tmp_path / "exports")


def table(path: Path, name: str, order: str | None = None) -> pd.DataFrame:
    """A warehouse table, list columns as tuples, rows sorted (by ``order`` or by every column)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        df = con.execute(f"select * from main.{name}").df()
    finally:
        con.close()
    for col in df.columns:
        if df[col].dtype == object and len(df) and isinstance(df[col].iloc[0], (list, np.ndarray)):
            df[col] = df[col].map(lambda v: tuple(np.asarray(v).tolist()))
    keys = order.split(",") if order else list(df.columns)
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


# --- cheap checks ------------------------------------------------------------------------------------


def test_dbt_vars_mirror_the_feature_constants():
    project = yaml.safe_load((Path(__file__).resolve().parents[2] / "dbt_project" / "dbt_project.yml").read_text())
    assert project["name"] == "interest_pipeline" and project["profile"] == "interest_pipeline"
    dbt_vars = project["vars"]
    assert tuple(dbt_vars["event_types"]) == contracts.EVENT_TYPES
    assert dbt_vars["event_weights"] == contracts.EVENT_WEIGHTS
    assert {k: dbt_vars[k] for k in CONFIG.dbt_vars()} == CONFIG.dbt_vars()


def test_ml_contracts_list_the_export_columns():
    root = Path(__file__).resolve().parents[2] / "dbt_project" / "models" / "marts"
    declared = {}
    for yml in root.rglob("_*__models.yml"):
        for model in yaml.safe_load(yml.read_text())["models"]:
            declared[model["name"]] = [c["name"] for c in model.get("columns", [])]
    for name, columns in contracts.EXPORT_COLUMNS.items():
        model = warehouse.EXPORT_TABLES[name]
        if model.startswith("ml_"):
            assert declared[model] == list(columns), name
        else:  # fct_events and dim_categories have more columns; the export selects these
            assert set(columns) <= set(declared[model]), name


def test_reading_a_missing_warehouse_is_one_clear_error(tmp_path):
    with pytest.raises(warehouse.WarehouseError, match="no warehouse there yet"):
        warehouse.query(tmp_path / "missing.duckdb", "select 1")


# --- builds --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_build_on_the_fixture_passes_every_dbt_test_and_exports_the_contract(paths):
    loaded = ingest_file(SMALL, "generic", paths.warehouse)
    assert loaded["rows_duplicate"] == 1
    summary = warehouse.build(paths, CONFIG)
    assert summary["models"] >= 15 and summary["tests"] >= 30 and summary["unit_tests"] == 3
    counts = warehouse.export_ml_tables(paths)
    for name, columns in contracts.EXPORT_COLUMNS.items():
        df = pd.read_parquet(paths.export_dir / f"{name}.parquet")
        assert tuple(df.columns) == columns, name
        assert len(df) == counts[name] > 0, name
    assert not list(paths.export_dir.glob(".*"))  # no temporary file left
    events = pd.read_parquet(paths.export_dir / "events.parquet")
    assert len(events) == loaded["rows_loaded"] - 1  # the duplicate is kept once
    cats = pd.read_parquet(paths.export_dir / "dim_categories.parquet")
    assert sorted(cats["category_idx"]) == list(range(1, len(cats) + 1))
    first_seen = events.groupby("category_idx")["event_ts"].min().sort_index()
    assert first_seen.is_monotonic_increasing  # one load: index = order of first appearance
    seqs = pd.read_parquet(paths.export_dir / "ml_sequences.parquet")
    assert set(seqs["split"]) == set(contracts.SPLITS)
    assert warehouse.query(paths.warehouse, "select count(*) as n from fct_events where user_id = $u",
                           {"u": events["user_id"].iloc[0]})["n"].iloc[0] > 0


def _brute_force(events: pd.DataFrame, protocol: pd.Series, seqs: pd.DataFrame, L: int) -> tuple[dict, list]:
    """Sequences and pair features recomputed from the events with plain pandas/numpy, per sample."""
    weights = events["event_type"].map(contracts.EVENT_WEIGHTS).to_numpy()
    ev = events.assign(w=weights).sort_values(["user_id", "event_ts", "category_idx", "event_type", "item_id"])
    by_user = {u: g.reset_index(drop=True) for u, g in ev.groupby("user_id")}
    horizon = protocol["horizon_hours"] * 3600
    expected_seq, expected_pairs = {}, []
    for row in seqs.itertuples():
        g = by_user[row.user_id]
        hist = g[g["event_ts"] < row.cutoff_ts]
        tail = hist.iloc[-L:]
        window = g[(g["event_ts"] >= row.cutoff_ts) & (g["event_ts"] < row.cutoff_ts + horizon)]
        if row.split == "score":
            window = window.iloc[0:0]
        label = window.groupby("category_idx").size().sort_index()
        expected_seq[(row.user_id, row.cutoff_ts)] = (
            len(hist), tuple(tail["category_idx"]), tuple(tail["event_type"].map(contracts.EVENT_TYPE_INDEX)),
            tuple((row.cutoff_ts - tail["event_ts"]) / 3600.0), tuple(label.index), tuple(label.to_numpy()),
        )
        pos = np.arange(1, len(hist) + 1)
        for cat, h in hist.assign(pos=pos).groupby("category_idx"):
            age = (row.cutoff_ts - h["event_ts"].to_numpy()) / 3600.0
            expected_pairs.append((
                row.user_id, row.cutoff_ts, cat, len(h), h["w"].sum(),
                *(float((h["w"] * 0.5 ** (age / hl)).sum()) for hl in (24, 72, 168)),
                float(age.min()), len(hist) - int(h["pos"].max()), int((age <= horizon / 3600).sum()),
            ))
    return expected_seq, expected_pairs


@pytest.mark.slow
def test_ml_tables_are_point_in_time_correct_checked_from_python(paths):
    ingest_file(SMALL, "generic", paths.warehouse)
    ingest_file(NEXT_DAY, "generic", paths.warehouse)
    warehouse.build(paths, CONFIG)
    warehouse.export_ml_tables(paths)
    read = {name: pd.read_parquet(paths.export_dir / f"{name}.parquet") for name in contracts.EXPORT_COLUMNS}
    protocol = read["ml_protocol"].iloc[0]
    assert protocol["test_cutoff_ts"] == protocol["max_ts"] - 48 * 3600
    assert protocol["val_cutoff_ts"] == protocol["test_cutoff_ts"] - 48 * 3600
    assert protocol["score_cutoff_ts"] == protocol["max_ts"] + 1
    seqs, pairs, events = read["ml_sequences"], read["ml_pair_features"], read["events"]
    # the split rules of contracts.SPLITS
    steps = (protocol["test_cutoff_ts"] - seqs["cutoff_ts"]) / (12 * 3600)
    grid = seqs[seqs["split"] != "score"]
    assert ((protocol["test_cutoff_ts"] - grid["cutoff_ts"]) % (12 * 3600) == 0).all()
    assert (seqs.loc[seqs["split"] == "test", "cutoff_ts"] == protocol["test_cutoff_ts"]).all()
    val = seqs["split"] == "val"
    assert ((seqs.loc[val, "cutoff_ts"] + 48 * 3600 > protocol["val_cutoff_ts"])
            & (seqs.loc[val, "cutoff_ts"] + 48 * 3600 <= protocol["test_cutoff_ts"])).all()
    assert (seqs.loc[seqs["split"] == "train", "cutoff_ts"] + 48 * 3600 <= protocol["val_cutoff_ts"]).all()
    assert not ((steps > 0) & (steps < 4) & (seqs["split"] != "score")).any()  # nothing crosses T_test
    # every sequence and pair feature, recomputed from the events
    expected_seq, expected_pairs = _brute_force(events, protocol, seqs, CONFIG.sequence_length)
    for row in seqs.itertuples():
        n, cats, types, gaps, label, counts = expected_seq[(row.user_id, row.cutoff_ts)]
        assert row.n_history_events == n
        assert tuple(row.seq_category_idx) == cats and tuple(row.seq_event_type_idx) == types
        assert np.allclose(row.seq_gap_hours, gaps) and min(row.seq_gap_hours) > 0
        assert tuple(row.label_category_idx) == label and tuple(row.label_event_counts) == counts
    got = pairs.sort_values(["user_id", "cutoff_ts", "category_idx"]).to_numpy(dtype=object)
    want = sorted(expected_pairs, key=lambda r: (r[0], r[1], r[2]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert tuple(g[:4]) == tuple(w[:4])
        assert np.allclose(np.asarray(g[4:], dtype=float), np.asarray(w[4:], dtype=float), rtol=1e-9, atol=1e-12)
    # the test users are exactly the evaluated users of EVALUATION.md
    t_test = protocol["test_cutoff_ts"]
    before = set(events.loc[events["event_ts"] < t_test, "user_id"])
    during = set(events.loc[(events["event_ts"] >= t_test) & (events["event_ts"] < t_test + 48 * 3600), "user_id"])
    assert set(seqs.loc[seqs["split"] == "test", "user_id"]) == before & during


@pytest.mark.slow
def test_appending_a_day_incrementally_equals_a_full_refresh(paths, tmp_path):
    ingest_file(SMALL, "generic", paths.warehouse)
    warehouse.build(paths, CONFIG)
    before = table(paths.warehouse, "dim_categories", "category_idx")
    appended = ingest_file(NEXT_DAY, "generic", paths.warehouse)
    assert appended["rows_duplicate"] == 1
    warehouse.build(paths, CONFIG)  # incremental
    full = Paths.from_env(data_dir=tmp_path / "full", warehouse=tmp_path / "full" / "wh.duckdb",
                          export_dir=tmp_path / "full" / "exports")
    ingest_file(SMALL, "generic", full.warehouse)
    ingest_file(NEXT_DAY, "generic", full.warehouse)
    warehouse.build(full, CONFIG, full_refresh=True)
    for name in TABLES:
        pd.testing.assert_frame_equal(table(paths.warehouse, name), table(full.warehouse, name),
                                      check_exact=False, rtol=1e-12, obj=name)
    after = table(paths.warehouse, "dim_categories", "category_idx")
    # old categories keep their index; the new one is appended
    pd.testing.assert_frame_equal(after.iloc[: len(before)][["category_idx", "category_id"]],
                                  before[["category_idx", "category_id"]])
    assert after.iloc[len(before):]["category_id"].tolist() == ["c_new"]


@pytest.mark.slow
def test_incremental_run_rewrites_only_the_users_with_new_events(paths):
    ingest_file(SMALL, "generic", paths.warehouse)
    warehouse.build(paths, CONFIG)
    ingest_file(FIXTURES / "events_next_day.csv", "generic", paths.warehouse)
    new_users = set(pd.read_csv(NEXT_DAY, dtype=str)["user_id"])
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        affected = {r[0] for r in con.execute(
            "select distinct user_id from stg_raw__events "
            "where last_load_id > (select max(last_load_id) from int_events_enriched)").fetchall()}
    finally:
        con.close()
    assert affected and affected <= new_users and len(affected) < len(table(paths.warehouse, "int_users_keyed"))


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "fmt", "n_test_users"), [
    ("taobao_userbehavior/UserBehavior_sample.csv", "taobao", 543),
    ("movielens_latest_small", "movielens", None),
])
def test_samples_sets_build_with_every_dbt_test_passing(paths, samples, dataset, fmt, n_test_users):
    loaded = ingest_file(samples / dataset, fmt, paths.warehouse)
    assert loaded["rows_read"] == loaded["rows_loaded"] + loaded["rows_rejected"]
    summary = warehouse.build(paths, CONFIG)
    assert summary["tests"] >= 30 and summary["unit_tests"] == 3
    counts = warehouse.query(paths.warehouse, "select split, count(*) as n from ml_sequences group by split")
    counts = dict(zip(counts["split"], counts["n"], strict=True))
    if n_test_users is not None:  # EVALUATION.md: 543 evaluated users on the Taobao sample
        assert counts["test"] == n_test_users
    assert counts["score"] == warehouse.query(paths.warehouse, "select count(distinct user_id) as n from fct_events")["n"][0]


@pytest.mark.slow
def test_pseudonymised_user_ids_are_salted_hashes(paths, monkeypatch, dbt_target):
    ingest_file(SMALL, "generic", paths.warehouse)
    secret = "pepper'salt-0a9f3c"
    monkeypatch.setenv("IEP_PSEUDONYMISE_SECRET", secret)
    warehouse.build(paths, CONFIG)
    ids = set(table(paths.warehouse, "fct_events")["user_id"])
    raw_ids = set(pd.read_csv(SMALL, dtype=str)["user_id"])
    assert ids == {hashlib.sha256((secret + u).encode()).hexdigest() for u in raw_ids}
    # the secret is in no dbt artifact: manifest, run results, compiled and run SQL, logs
    leaked = [p for p in dbt_target.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.slow
def test_a_failing_dbt_test_names_the_node(paths):
    ingest_file(SMALL, "generic", paths.warehouse)
    con = duckdb.connect(str(paths.warehouse))
    try:  # a row the loader would never write: an event type outside the vocabulary
        con.execute("insert into raw.events values ('u', 'i', 'c', 'teleport', timestamp '2024-03-02', 1, 'x', 99)")
    finally:
        con.close()
    with pytest.raises(warehouse.DbtBuildError) as info:
        warehouse.build(paths, CONFIG)
    assert "source_accepted_values_raw_events_event_type" in str(info.value)
    assert any("accepted_values" in uid for uid, _, _ in info.value.failures)


def test_dbt_connections_take_the_share_of_the_memory_budget(paths, monkeypatch):
    """The profile's plugin sets DuckDB's memory_limit from IEP_DUCKDB_MEMORY_LIMIT on dbt's own connection;
    a bad budget stops the build with one sentence before dbt starts."""
    import json
    import subprocess

    ingest_file(SMALL, "generic", paths.warehouse)
    monkeypatch.setenv("IEP_DUCKDB_MEMORY_LIMIT", "2GB")
    cmd = warehouse.dbt_command(paths, CONFIG, command="show") + [
        "--inline", "select current_setting('memory_limit') as m", "--output", "json", "--log-format", "json"]
    proc = subprocess.run(cmd, env=warehouse.dbt_env(paths), cwd=paths.dbt_project_dir.parent, capture_output=True,
                          text=True, check=True)
    shown = [json.loads(line)["data"]["preview"] for line in proc.stdout.splitlines()
             if line.startswith("{") and json.loads(line)["info"]["name"] == "ShowNode"]
    con = duckdb.connect()
    try:
        con.execute("set memory_limit = '1700MB'")  # 85 % of 2 GB
        expected = con.execute("select current_setting('memory_limit')").fetchone()[0]
    finally:
        con.close()
    assert json.loads(shown[0]) == [{"m": expected}]
    monkeypatch.setenv("IEP_DUCKDB_MEMORY_LIMIT", "lots")
    with pytest.raises(warehouse.PipelineError, match="^IEP_DUCKDB_MEMORY_LIMIT: expected a size"):
        warehouse.build(paths, CONFIG)
