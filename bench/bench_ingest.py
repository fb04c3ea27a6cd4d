"""Ingest benchmark: one CSV larger than the loader's DuckDB memory limit, through ``ingest_file``.

Writes ``bench/results/ingest.json``:

- ``file_mb``, ``rows``: the generated CSV (the ``generic`` layout, unique rows, epoch-second times);
- ``memory_limit``, ``threads``: what the loader's DuckDB was allowed (``ingest_file(memory_limit=...)``);
- ``seconds``, ``copy_seconds``, ``load_seconds``: wall time of the whole ingest, of the hashing private
  copy (Python) and of the DuckDB transaction (judge, insert, duplicates, record);
- ``mb_per_s``, ``rows_per_s``: file size and rows over the whole wall time;
- ``peak_rss_mb``: the loading process's peak resident memory (``getrusage`` of the child process that
  ran the ingest, so the generator's memory is not counted);
- ``load_average_before`` / ``load_average_after``: the machine's 1/5/15-minute load averages (other
  jobs share the machine; read the timings with them).

The default is the case the loader must survive: a 2 GB file with a 1 GB memory limit. A quick run::

    python bench/bench_ingest.py --size-mb 300 --memory-limit 128MB
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "ingest.json"
BYTES_PER_ROW = 40  # the generated rows' average length, to aim at --size-mb


def generate(path: Path, size_mb: float) -> int:
    """A generic CSV of about ``size_mb`` MB with unique rows; returns its number of rows."""
    import duckdb

    n_rows = int(size_mb * (1 << 20) / BYTES_PER_ROW)
    con = duckdb.connect()
    try:
        con.execute(f"""
            copy (
                select 'u' || lpad((i % 1000003)::varchar, 7, '0') as user_id,
                       'i' || lpad((i * 7919 % 2000003)::varchar, 7, '0') as item_id,
                       'c' || lpad((i % 997)::varchar, 4, '0') as category_id,
                       ['view', 'view', 'view', 'search', 'fav', 'cart', 'buy', 'review'][1 + i % 8] as event_type,
                       1767225600 + i // 50 as event_ts
                from range({n_rows}) as t(i)
            ) to '{path}' (header, delimiter ',')
        """)
    finally:
        con.close()
    return n_rows


def child(csv: str, warehouse: str, memory_limit: str, threads: int) -> None:
    """Runs in its own process: the measured ingest; prints its summary as JSON."""
    from ml_tasks.data.ingest import ingest_file

    summary = ingest_file(Path(csv), "generic", Path(warehouse), memory_limit=memory_limit, threads=threads)
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=2048, help="size of the generated CSV (default 2048)")
    parser.add_argument("--memory-limit", default="1GB", help="the loader's DuckDB memory_limit (default 1GB)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, help="where the CSV and the warehouse go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the warehouse")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=4, metavar=("CSV", "WAREHOUSE", "MEMORY_LIMIT", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.workdir))
    try:
        csv, warehouse = work / "events.csv", work / "warehouse.duckdb"
        started = time.perf_counter()
        rows = generate(csv, args.size_mb)
        generate_s = time.perf_counter() - started
        file_mb = csv.stat().st_size / (1 << 20)
        load_before = os.getloadavg()
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", str(csv), str(warehouse), args.memory_limit,
                              str(args.threads)], capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()
        if out.returncode != 0:
            sys.exit(f"the ingest failed:\n{out.stderr[-3000:]}")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = {
            "file_mb": round(file_mb, 1),
            "rows": rows,
            "rows_loaded": summary["rows_loaded"],
            "memory_limit": args.memory_limit,
            "threads": args.threads,
            "seconds": round(seconds, 2),
            "copy_seconds": summary["stage_seconds"]["copy"],
            "load_seconds": summary["stage_seconds"]["load"],
            "mb_per_s": round(file_mb / seconds, 1),
            "rows_per_s": round(rows / seconds),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "generate_seconds": round(generate_s, 2),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        }
        assert summary["rows_read"] == summary["rows_loaded"] == rows, summary
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
