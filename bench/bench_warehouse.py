"""Warehouse benchmark: ingest + dbt build of 1M and 10M synthetic events, against the pandas way.

Writes ``bench/results/warehouse.json``:

- ``events_per_s_1m`` / ``events_per_s_10m``: events / whole wall time of ``ingest_file`` plus
  ``warehouse.build`` (every model, unit test and data test) on a fresh warehouse;
- ``per_event_cost_ratio``: (seconds per event at 10M) / (seconds per event at 1M);
- ``peak_rss_mb_*``: peak resident memory of the loader process and of dbt (a child process);
- ``pandas_ratio_1m``: the pandas way's seconds / our seconds on the same 1M events. The pandas way is
  what DESIGN.md describes a user writing without this project: ``read_csv``, filter the valid rows,
  ``to_datetime``, sort by user and time, then per user ``np.searchsorted`` at each cutoff of the same
  grid and a slice for the last L events and the label window. It builds only the sequences (no pair
  features, sessions, marts or tests), so ``pandas_ratio_1m_sequences_only`` compares it with our
  ingest + ``dbt run`` of just the models ``ml_sequences`` needs, too.

Each measurement runs in a fresh Python process (so peak memory is its own). Usage::

    python bench/bench_warehouse.py [--sizes 1000000 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "warehouse.json"
DAYS = 14
EVENTS_PER_USER_DAY = 6.0
SEED = 11


# --- the measured steps (each in its own process) ----------------------------------------------------


def _rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb_loader": round(own, 1), "peak_rss_mb_dbt": round(children, 1)}


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_pipeline(events_csv: Path, work: Path, select: str | None) -> dict:
    from ml_tasks.config import Paths, WarehouseConfig
    from ml_tasks.data import warehouse
    from ml_tasks.data.ingest import ingest_file

    paths = Paths.from_env(data_dir=work, warehouse=work / "warehouse.duckdb", export_dir=work / "exports")
    os.environ["DBT_TARGET_PATH"] = str(work / "dbt-target")
    os.environ["DBT_LOG_PATH"] = str(work / "dbt-logs")
    # parse the project once outside the clock, as a scheduler with a warm manifest would
    subprocess.run(warehouse.dbt_command(paths, WarehouseConfig(), command="parse"),
                   env=warehouse.dbt_env(paths), cwd=REPO, check=True, capture_output=True)
    started, cpu0 = time.perf_counter(), _cpu_s()
    loaded = ingest_file(events_csv, "generic", paths.warehouse)
    ingest_s = time.perf_counter() - started
    if select:
        cmd = warehouse.dbt_command(paths, WarehouseConfig(), select=select, command="run")
        subprocess.run(cmd, env=warehouse.dbt_env(paths), cwd=REPO, check=True, capture_output=True)
        built = {"select": select}
    else:
        built = warehouse.build(paths, WarehouseConfig())
    seconds = time.perf_counter() - started
    n = warehouse.query(paths.warehouse, "select count(*) as n from ml_sequences")["n"].iloc[0]
    return {"events": loaded["rows_loaded"], "seconds": round(seconds, 2), "ingest_seconds": round(ingest_s, 2),
            "build_seconds": round(seconds - ingest_s, 2), "cpu_seconds": round(_cpu_s() - cpu0, 1),
            "ml_sequences_rows": int(n), "build": built, **_rss_mb()}


def run_pandas(events_csv: Path, horizon_hours: int = 48, step_hours: int = 12, length: int = 50) -> dict:
    """The pandas way (DESIGN.md): the same samples, sequences and labels as ml_sequences' grid rows."""
    import numpy as np
    import pandas as pd

    from ml_tasks.contracts import EVENT_TYPE_INDEX

    started, cpu0 = time.perf_counter(), _cpu_s()
    df = pd.read_csv(events_csv, dtype={"user_id": str, "item_id": str, "category_id": str, "event_type": str})
    df = df.dropna(subset=["user_id", "item_id", "category_id", "event_type", "event_ts"])
    df["event_type"] = df["event_type"].str.strip().str.lower()
    df = df[df["event_type"].isin(list(EVENT_TYPE_INDEX))]
    df["event_at"] = pd.to_datetime(df["event_ts"], unit="s", utc=True)
    df = df[df["event_at"] >= pd.Timestamp("1995-01-01", tz="UTC")].drop_duplicates()
    df = df.sort_values(["user_id", "event_at", "category_id", "event_type"], kind="stable")
    ts = df["event_at"].to_numpy().astype("datetime64[s]").astype("int64")
    first_seen = df.sort_values("event_at", kind="stable").drop_duplicates("category_id")["category_id"]
    cat_index = pd.Series(np.arange(1, len(first_seen) + 1), index=first_seen.to_numpy())
    cats = df["category_id"].map(cat_index).to_numpy()
    types = df["event_type"].map(EVENT_TYPE_INDEX).to_numpy()
    users = df["user_id"].to_numpy()
    max_ts = int(ts.max())
    horizon, step = horizon_hours * 3600, step_hours * 3600
    test_cutoff = max_ts - horizon
    grid = test_cutoff - step * np.arange(0, (max_ts - int(ts.min())) // step + 2)
    grid = grid[(grid == test_cutoff) | (grid <= test_cutoff - horizon)][::-1]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    rows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        u_ts, u_cats, u_types = ts[a:b], cats[a:b], types[a:b]
        starts = np.searchsorted(u_ts, grid, side="left")
        ends = np.searchsorted(u_ts, grid + horizon, side="left")
        for cutoff, n, m in zip(grid, starts, ends, strict=True):
            if n == 0 or m == n:
                continue
            lo = max(n - length, 0)
            label, counts = np.unique(u_cats[n:m], return_counts=True)
            rows.append((users[a], int(cutoff), n, u_cats[lo:n], u_types[lo:n], (cutoff - u_ts[lo:n]) / 3600.0,
                         label, counts))
    seqs = pd.DataFrame(rows, columns=["user_id", "cutoff_ts", "n_history_events", "seq_category_idx",
                                       "seq_event_type_idx", "seq_gap_hours", "label_category_idx",
                                       "label_event_counts"])
    seconds = time.perf_counter() - started
    return {"events": int(len(df)), "seconds": round(seconds, 2), "cpu_seconds": round(_cpu_s() - cpu0, 1),
            "grid_sequences": int(len(seqs)), "peak_rss_mb": _rss_mb()["peak_rss_mb_loader"]}


# --- orchestration -----------------------------------------------------------------------------------


def _in_fresh_process(kind: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--step", kind, *args], cwd=REPO, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _generate(n_events: int, out_dir: Path) -> Path:
    from ml_tasks.data import synthetic

    n_users = max(1, round(n_events / (DAYS * EVENTS_PER_USER_DAY)))
    config = synthetic.SyntheticConfig(n_users=n_users, days=DAYS, events_per_user_day=EVENTS_PER_USER_DAY,
                                       seed=SEED)
    return Path(synthetic.write(config, out_dir)["events_path"])


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else str(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--keep", type=Path, help="keep the generated data and warehouses here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "pipeline":
        print(json.dumps(run_pipeline(Path(args.args[0]), Path(args.args[1]), args.args[2] or None)))
        return 0
    if args.step == "pandas":
        print(json.dumps(run_pandas(Path(args.args[0]))))
        return 0

    root = args.keep or Path(tempfile.mkdtemp(prefix="iep-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()},
                    "synthetic": {"days": DAYS, "events_per_user_day": EVENTS_PER_USER_DAY, "seed": SEED},
                    "runs": {}}
    try:
        for size in sorted(args.sizes):
            label = _label(size)
            csv = _generate(size, root / f"data_{label}")
            run = _in_fresh_process("pipeline", str(csv), str(root / f"wh_{label}"), "")
            run["events_per_s"] = round(run["events"] / run["seconds"])
            result["runs"][label] = run
            result[f"events_per_s_{label}"] = run["events_per_s"]
            print(f"{label}: {run}", file=sys.stderr, flush=True)
            if size == min(args.sizes):
                pandas = _in_fresh_process("pandas", str(csv))
                seq_only = _in_fresh_process("pipeline", str(csv), str(root / f"wh_{label}_seq"), "+ml_sequences")
                result["pandas"] = {label: pandas}
                result["sequences_only"] = {label: seq_only}
                result[f"pandas_ratio_{label}"] = round(pandas["seconds"] / run["seconds"], 2)
                result[f"pandas_ratio_{label}_sequences_only"] = round(pandas["seconds"] / seq_only["seconds"], 2)
                print(f"pandas {label}: {pandas}; sequences only: {seq_only}", file=sys.stderr, flush=True)
        labels = [_label(s) for s in sorted(args.sizes)]
        if len(labels) >= 2:
            small, big = result["runs"][labels[0]], result["runs"][labels[-1]]
            ratio = (big["seconds"] / big["events"]) / (small["seconds"] / small["events"])
            result["per_event_cost_ratio"] = round(ratio, 3)
        result["machine"]["load_average_end"] = os.getloadavg()
        result["goals"] = {
            "events_per_s_10m >= 200000": result.get("events_per_s_10m", 0) >= 200_000,
            "per_event_cost_ratio <= 1.5": result.get("per_event_cost_ratio", 99) <= 1.5,
            "pandas_ratio_1m >= 5": result.get("pandas_ratio_1m", 0) >= 5,
        }
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "pandas", "sequences_only")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
