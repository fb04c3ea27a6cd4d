"""``python -m ml_tasks <step>``: run any pipeline step without Airflow.

Every step prints one JSON line with its summary on stdout. A user mistake (a missing file, a file
in the wrong format, a version that does not exist) ends with one sentence on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ml_tasks.errors import PipelineError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml_tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, help="DuckDB file (default: $IEP_WAREHOUSE)")
    parser.add_argument("--data-dir", type=Path, help="root of generated state (default: $IEP_DATA_DIR)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    p = sub.add_parser("generate", help="write the synthetic behaviour log (planted interest drift)")
    p.add_argument("--users", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--events-per-user-day", type=float)
    p.add_argument("--categories", type=int, help="catalogue size (default 120)")
    p.add_argument("--items", type=int, help="items over all categories (default 20000)")
    p.add_argument("--out", type=Path, help="folder (default: the landing folder)")
    p.add_argument("--file-format", choices=["csv", "parquet"], default="csv")

    p = sub.add_parser("ingest", help="load a behaviour log file into raw.events")
    p.add_argument("--events", type=Path, help="file to load (default: every new file in the landing folder)")
    p.add_argument("--format", default="generic", choices=["generic", "taobao", "movielens"])

    p = sub.add_parser("build", help="dbt build (models and tests), then export the ML tables")
    p.add_argument("--full-refresh", action="store_true")
    p.add_argument("--select", help="dbt selection")

    sub.add_parser("export", help="export the ML tables to Parquet")

    p = sub.add_parser("train", help="train, evaluate, register and score (the train DAG without Airflow)")
    _model_args(p)

    p = sub.add_parser("evaluate", help="the evaluation protocol on a file, in a temporary workspace")
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--format", default="generic", choices=["generic", "taobao", "movielens"])
    p.add_argument("--horizon-days", type=float, default=2.0)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds for the learned models")
    p.add_argument("--dataset", help="name in the report (default: from the file name)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep-workspace", type=Path, help="keep the warehouse and exports in this folder")
    _model_args(p, seeds=False)

    p = sub.add_parser("update", help="fine-tune a challenger from the champion and gate it")
    p.add_argument("--margin", type=float, default=None, help="relative NDCG@10 gain needed to promote")
    _model_args(p)

    p = sub.add_parser("promote", help="point the champion alias at a model version (rollback)")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--reason", default="manual promotion")

    p = sub.add_parser("score", help="score active users with the champion; write the warehouse tables")
    p.add_argument("--active-days", type=float, default=None)

    sub.add_parser("status", help="one JSON line: champion, its metrics, scored users, last gate decision")

    p = sub.add_parser("simulate", help="replay the log day by day: never-updated vs updates vs retraining")
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--events", type=Path, help="log to replay (default: the synthetic data set)")
    p.add_argument("--format", default="generic", choices=["generic", "taobao", "movielens"])
    p.add_argument("--out", type=Path, required=True)
    _model_args(p)

    sub.add_parser("summary", help="human-readable summary of the last pipeline run")
    return parser


def _model_args(p: argparse.ArgumentParser, seeds: bool = True) -> None:
    if seeds:
        p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="override a model setting (ml_tasks.config.ModelConfig), e.g. --set copy_head=true; "
                        "repeatable")


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from ml_tasks.config import parse_model_overrides

    out = parse_model_overrides(getattr(args, "settings", []))
    for name in ("seed", "epochs"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.verbose:  # TensorFlow's Python-side notes (e.g. tf.function retracing) are not for users
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from ml_tasks import steps
    from ml_tasks.config import Paths

    paths = Paths.from_env(warehouse=args.warehouse, data_dir=args.data_dir)
    if args.data_dir is not None and args.warehouse is None:
        paths = Paths.from_env(data_dir=args.data_dir, warehouse=args.data_dir / "warehouse.duckdb",
                               export_dir=args.data_dir / "exports", artifact_dir=args.data_dir / "artifacts",
                               landing_dir=args.data_dir / "landing")
    try:
        result = _dispatch(steps, paths, args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if isinstance(result, str):
        print(result)
    else:
        print(json.dumps(result, default=str, sort_keys=False))
    return 0


def _dispatch(steps: Any, paths: Any, args: argparse.Namespace) -> Any:
    cmd = args.command
    if cmd == "generate":
        return steps.generate(paths, out_dir=args.out, users=args.users, days=args.days, seed=args.seed,
                              events_per_user_day=args.events_per_user_day, file_format=args.file_format,
                              categories=args.categories, items=args.items)
    if cmd == "ingest":
        return steps.ingest(paths, args.events, args.format)
    if cmd == "build":
        return steps.build(paths, full_refresh=args.full_refresh, select=args.select)
    if cmd == "export":
        return steps.export(paths)
    if cmd == "train":
        return steps.train_pipeline(paths, overrides=_model_overrides(args))
    if cmd == "evaluate":
        return steps.evaluate_file(paths, args.events, args.format, out=args.out,
                                   horizon_days=args.horizon_days, n_seeds=args.seeds,
                                   dataset=args.dataset, keep_workspace=args.keep_workspace,
                                   overrides=_model_overrides(args))
    if cmd == "update":
        return steps.update_pipeline(paths, margin=args.margin, overrides=_model_overrides(args))
    if cmd == "promote":
        return steps.promote(paths, args.version, reason=args.reason)
    if cmd == "score":
        return steps.score_users(paths, active_days=args.active_days)
    if cmd == "status":
        return steps.status(paths)
    if cmd == "simulate":
        return steps.simulate(paths, days=args.days, out=args.out, events=args.events, fmt=args.format,
                              overrides=_model_overrides(args))
    if cmd == "summary":
        return steps.summary(paths)
    raise PipelineError(f"unknown step {cmd!r}")


if __name__ == "__main__":
    sys.exit(main())
