"""Warehouse benchmark: the project's build against a pandas and a Polars script, side by side, same events.

Writes ``bench/results/warehouse.json`` (``--out``). For each size (default 1M and 10M synthetic events)
and each of ``--repeats`` rounds (default 3; the JSON keeps every round and the medians), in a fresh
process each so that peak memory is its own:

- ``project_full``: ``ingest`` + ``dbt build`` of every model, unit test and data test on a fresh warehouse;
- ``project_sequences``: ``ingest`` + ``dbt run`` of just the models ``ml_sequences`` needs + its Parquet
  export: the same output as the peers;
- ``pandas`` and ``polars`` (``bench/peers.py``): the scripts a user would write without the project,
  from the same CSV to the same samples in Parquet;

then checks that each peer's samples equal the project's ``ml_sequences`` row for row (``equal``) — a
peer that computed something else would be no comparison. ``--orchestration`` adds the pipeline's
orchestration overhead: ``make run``'s DAGs through ``airflow dags test`` against the same steps through
``python -m ml_tasks`` on the same default synthetic data. The machine's load average at the start and
end of every measurement is recorded, so a loaded run can be told from a quiet one.

    python bench/bench_warehouse.py [--sizes 1000000 10000000] [--repeats 3] [--orchestration]
    python bench/bench_warehouse.py --sizes 10000000 50000000 --repeats 1 --memory-limit 12GB --no-peers
                                                                          # make bench-large

``--no-peers`` measures the project alone: at 50M events the pandas script would need about 26 GB and the
Polars script about 50 GB (their peak memory at 10M times five), more than a 24 GB machine has. Every
project run also records ``spill_peak_mb``, the largest size DuckDB's temporary directory (beside the
warehouse file) reached, polled every 0.2 s. With ``--memory-limit`` (the process budget
``IEP_DUCKDB_MEMORY_LIMIT``), each size also says whether every project process's peak RSS stayed within it
(``peak_rss_within_budget``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ml_tasks.data.memory import budget_bytes, duckdb_memory_limit

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "warehouse.json"
DAYS = 14
EVENTS_PER_USER_DAY = 6.0
SEED = 11


def _rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(max(own, children), 1), "peak_rss_mb_self": round(own, 1),
            "peak_rss_mb_children": round(children, 1)}


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- the measured steps (each runs in a fresh process: python bench_warehouse.py --step NAME ARGS) -------


class _SpillWatch:
    """The peak size of DuckDB's spill directory (``<warehouse>.tmp``), polled in a thread."""

    def __init__(self, directory: Path, interval_s: float = 0.2) -> None:
        import threading

        self.directory, self.interval_s, self.peak = directory, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                size = sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())
            except OSError:  # a spill file removed while listed
                size = 0
            self.peak = max(self.peak, size)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _SpillWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def step_project(events_csv: Path, work: Path, sequences_only: bool) -> dict:
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
    with _SpillWatch(Path(f"{paths.warehouse}.tmp")) as spill:
        loaded = ingest_file(events_csv, "generic", paths.warehouse)
        ingest_s = time.perf_counter() - started
        if sequences_only:
            cmd = warehouse.dbt_command(paths, WarehouseConfig(), select="+ml_sequences", command="run")
            subprocess.run(cmd, env=warehouse.dbt_env(paths), cwd=REPO, check=True, capture_output=True)
            out = work / "ml_sequences.parquet"
            with warehouse.read_only_connection(paths.warehouse) as con:
                con.execute(f"copy ml_sequences to '{out}' (format parquet)")
            built: dict = {"select": "+ml_sequences", "output": str(out)}
        else:
            built = warehouse.build(paths, WarehouseConfig())
            built["output"] = str(paths.export_dir / "ml_sequences.parquet")
            warehouse.export_ml_tables(paths)
    seconds = time.perf_counter() - started
    rows = warehouse.query(paths.warehouse, "select count(*) as n from ml_sequences")["n"].iloc[0]
    return {"events": loaded["rows_loaded"], "seconds": round(seconds, 2), "ingest_seconds": round(ingest_s, 2),
            "build_seconds": round(seconds - ingest_s, 2), "cpu_seconds": round(_cpu_s() - cpu0, 1),
            "ml_sequences_rows": int(rows), "output": built["output"],
            "tests": built.get("tests"), "models": built.get("models"),
            "spill_peak_mb": round(spill.peak / 2**20, 1), **_rss_mb()}


def step_peer(name: str, events_csv: Path, out: Path) -> dict:
    sys.path.insert(0, str(BENCH))
    import peers

    started, cpu0 = time.perf_counter(), _cpu_s()
    rows = getattr(peers, f"{name}_sequences")(events_csv, out)
    return {"seconds": round(time.perf_counter() - started, 2), "cpu_seconds": round(_cpu_s() - cpu0, 1),
            "sequences": rows, "output": str(out), **_rss_mb()}


def _fresh(step: str, *args: str, env: dict | None = None) -> dict:
    load = os.getloadavg()
    out = subprocess.run([sys.executable, __file__, "--step", step, *args], cwd=REPO, check=True,
                         capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


# --- orchestration overhead ---------------------------------------------------------------------------


def orchestration(root: Path) -> dict:
    """``make run``'s pipeline (the DAGs through ``airflow dags test``) against ``python -m ml_tasks``
    ingest, build and train on the same default synthetic data, each on a fresh workspace."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IEP_", "AIRFLOW", "MLFLOW_"))}
    out: dict = {}
    for kind in ("airflow_dags", "cli"):
        data = root / f"orchestration_{kind}"
        env = {**base, "IEP_DATA_DIR": str(data), "AIRFLOW_HOME": str(data / "airflow"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run([sys.executable, "-m", "ml_tasks", "generate"], env=env, cwd=REPO, check=True,
                       capture_output=True)
        load, started = os.getloadavg(), time.perf_counter()
        if kind == "airflow_dags":
            subprocess.run([sys.executable, "scripts/pipeline.py", "--no-generate"], env=env, cwd=REPO, check=True,
                           capture_output=True)
        else:
            for step in (["ingest"], ["build"], ["train"]):
                subprocess.run([sys.executable, "-m", "ml_tasks", *step], env=env, cwd=REPO, check=True,
                               capture_output=True)
        out[kind] = {"seconds": round(time.perf_counter() - started, 1),
                     "load_average_before": [round(x, 2) for x in load],
                     "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    out["overhead_ratio"] = round(out["airflow_dags"]["seconds"] / out["cli"]["seconds"], 3)
    return out


# --- the run ----------------------------------------------------------------------------------------------


def _generate(n_events: int, out_dir: Path) -> Path:
    from ml_tasks.data import synthetic

    n_users = max(1, round(n_events / (DAYS * EVENTS_PER_USER_DAY)))
    config = synthetic.SyntheticConfig(n_users=n_users, days=DAYS, events_per_user_day=EVENTS_PER_USER_DAY,
                                       seed=SEED)
    return Path(synthetic.write(config, out_dir)["events_path"])


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else str(n)


def _median(rounds: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 2)


def measure_size(size: int, root: Path, repeats: int, env: dict, with_peers: bool = True) -> dict:
    sys.path.insert(0, str(BENCH))
    import peers

    label = _label(size)
    csv = _generate(size, root / f"data_{label}")
    rounds: dict[str, list[dict]] = {"project_full": [], "project_sequences": []}
    if with_peers:
        rounds.update(pandas=[], polars=[])
    for r in range(repeats):
        for kind in rounds:
            work = root / f"{kind}_{label}_{r}"
            work.mkdir(parents=True, exist_ok=True)
            if kind.startswith("project"):
                run = _fresh("project", str(csv), str(work), "1" if kind == "project_sequences" else "", env=env)
            else:
                run = _fresh(kind, str(csv), str(work / "sequences.parquet"), env=env)
            rounds[kind].append(run)
            print(f"{label} round {r + 1} {kind}: {run['seconds']} s, {run['peak_rss_mb']} MB", file=sys.stderr,
                  flush=True)
        if r < repeats - 1:  # keep the last round's outputs for the equality check
            for kind in rounds:
                shutil.rmtree(root / f"{kind}_{label}_{r}", ignore_errors=True)
    project_out = Path(rounds["project_sequences"][-1]["output"])
    result: dict = {"events": rounds["project_full"][0]["events"], "rounds": rounds, "median": {}}
    for kind, runs in rounds.items():
        result["median"][kind] = {"seconds": _median(runs, "seconds"), "peak_rss_mb": _median(runs, "peak_rss_mb")}
        if kind.startswith("project"):
            result["median"][kind]["spill_peak_mb"] = max(r.get("spill_peak_mb", 0.0) for r in runs)
    peer_names = [peer for peer in ("pandas", "polars") if peer in rounds]
    for peer in peer_names:
        result[f"{peer}_equal_to_project"] = peers.check_equal(Path(rounds[peer][-1]["output"]), project_out)
    med = result["median"]
    result["events_per_s_full"] = round(result["events"] / med["project_full"]["seconds"])
    result["events_per_s_sequences_only"] = round(result["events"] / med["project_sequences"]["seconds"])
    budget = budget_bytes(env["IEP_DUCKDB_MEMORY_LIMIT"]) if env.get("IEP_DUCKDB_MEMORY_LIMIT") else None
    if budget:  # the process budget: every project process's peak RSS against it
        peak = max(r["peak_rss_mb"] for kind in ("project_full", "project_sequences") for r in rounds[kind])
        result["peak_rss_mb_project"] = peak
        result["peak_rss_within_budget"] = peak * 2**20 <= budget
    for peer in peer_names:
        result[f"speedup_vs_{peer}"] = round(med[peer]["seconds"] / med["project_sequences"]["seconds"], 2)
        result[f"memory_ratio_vs_{peer}"] = round(med["project_sequences"]["peak_rss_mb"] / med[peer]["peak_rss_mb"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit", help="the project processes' memory budget (IEP_DUCKDB_MEMORY_LIMIT; "
                        "DuckDB's buffer pool gets 85 %% of it), e.g. 12GB")
    parser.add_argument("--orchestration", action="store_true", help="also measure make run against the CLI")
    parser.add_argument("--no-peers", action="store_true", help="the project alone (no pandas or Polars script)")
    parser.add_argument("--keep", type=Path, help="keep the generated data and warehouses here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "project":
        print(json.dumps(step_project(Path(args.args[0]), Path(args.args[1]), bool(args.args[2]))))
        return 0
    if args.step in ("pandas", "polars"):
        print(json.dumps(step_peer(args.step, Path(args.args[0]), Path(args.args[1]))))
        return 0

    env = dict(os.environ)
    if args.memory_limit:
        env["IEP_DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    root = args.keep or Path(tempfile.mkdtemp(prefix="iep-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
                                "memory_limit": args.memory_limit, "peers": not args.no_peers,
                                **({"duckdb_memory_limit": duckdb_memory_limit(args.memory_limit)}
                                   if args.memory_limit else {})},
                    "synthetic": {"days": DAYS, "events_per_user_day": EVENTS_PER_USER_DAY, "seed": SEED},
                    "repeats": args.repeats, "sizes": {}}
    try:
        for size in sorted(args.sizes):
            result["sizes"][_label(size)] = measure_size(size, root, args.repeats, env, not args.no_peers)
        labels = [_label(s) for s in sorted(args.sizes)]
        if len(labels) >= 2:
            small, big = result["sizes"][labels[0]], result["sizes"][labels[-1]]
            result["per_event_cost_ratio"] = round(small["events_per_s_full"] / big["events_per_s_full"], 3)
        if args.orchestration:
            result["orchestration"] = orchestration(root)
        result["machine"]["load_average_end"] = os.getloadavg()
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {label: {k: v for k, v in r.items() if k not in ("rounds",)} for label, r in result["sizes"].items()}
    print(json.dumps({"sizes": summary, **{k: v for k, v in result.items() if k not in ("sizes",)}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
