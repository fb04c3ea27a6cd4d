"""``python -m ml_tasks <step>`` (or ``ml-tasks <step>``): run any pipeline step without Airflow.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_tasks.config import Paths, parse_model_overrides
from ml_tasks.contracts import MAX_REJECT_RATIO, SOURCE_FORMATS
from ml_tasks.errors import PipelineError


def _global_args(p: argparse.ArgumentParser, default: Any) -> None:
    """``--warehouse``, ``--data-dir`` and ``-v``: accepted before or after the step name."""
    p.add_argument("--warehouse", type=Path, default=default, help="DuckDB file (default: $IEP_WAREHOUSE)")
    p.add_argument("--data-dir", type=Path, default=default,
                   help="root of generated state (default: $IEP_DATA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress to stderr")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml_tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_args(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    def step(name: str, help: str) -> argparse.ArgumentParser:  # the step's own options + the globals
        p = sub.add_parser(name, help=help)
        _global_args(p, argparse.SUPPRESS)
        return p

    p = step("generate", help="write the synthetic behaviour log (planted interest drift)")
    p.add_argument("--users", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--events-per-user-day", type=float)
    p.add_argument("--categories", type=int, help="catalogue size (default 120)")
    p.add_argument("--items", type=int, help="items over all categories (default 20000)")
    p.add_argument("--out", type=Path, help="folder (default: the landing folder)")
    p.add_argument("--file-format", choices=["csv", "parquet"], default="csv")

    p = step("ingest", help="load a behaviour log file into raw.events")
    p.add_argument("--events", type=Path, help="file or Parquet folder to load (default: every new file in the "
                                                "landing folder)")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--format", default="generic", choices=SOURCE_FORMATS)
    layout.add_argument("--source", type=Path, metavar="SOURCE.yml",
                        help="a source definition for any other layout (README: Input formats)")
    p.add_argument("--max-reject-ratio", type=float, default=MAX_REJECT_RATIO, metavar="RATIO",
                   help=f"a file with a larger share of rejected rows fails as a whole (default {MAX_REJECT_RATIO})")

    p = step("build", help="dbt build (models and tests), then export the ML tables")
    p.add_argument("--full-refresh", action="store_true")
    p.add_argument("--select", help="dbt selection")

    step("export", help="export the ML tables to Parquet")

    p = step("train", help="train, evaluate, register and score (the train DAG without Airflow)")
    _model_args(p)

    p = step("evaluate", help="the evaluation protocol on a file, in a temporary workspace")
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--format", default="generic", choices=SOURCE_FORMATS)
    p.add_argument("--horizon-days", type=float, default=2.0)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds for the learned models")
    p.add_argument("--dataset", help="name in the report (default: from the file name)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep-workspace", type=Path, help="keep the warehouse and exports in this folder")
    p.add_argument("--background-events", type=Path, metavar="FILE",
                   help="other users' events: train the sequence model and the transition statistics, "
                        "never evaluated, cut at the test cutoff")
    p.add_argument("--background-format", default="generic", choices=SOURCE_FORMATS)
    p.add_argument("--background-max-sequences", type=int, default=None, metavar="N",
                   help="at most N background sequences (a random subsample above it)")
    _model_args(p, seeds=False)

    p = step("update", help="fine-tune a challenger from the champion and gate it")
    p.add_argument("--margin", type=float, default=None, help="relative NDCG@10 gain needed to promote")
    _model_args(p)

    p = step("promote", help="point the champion alias at a model version (rollback)")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--reason", default="manual promotion")

    p = step("score", help="score active users with the champion; write the warehouse tables")
    p.add_argument("--active-days", type=float, default=None)

    step("status", help="one JSON line: champion, its metrics, scored users, last gate decision")

    p = step("simulate", help="replay the log day by day: never-updated vs updates vs retraining")
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--events", type=Path, help="log to replay (default: the synthetic data set)")
    p.add_argument("--format", default="generic", choices=SOURCE_FORMATS)
    p.add_argument("--out", type=Path, required=True)
    _model_args(p)

    step("summary", help="human-readable summary of the last pipeline run")
    return parser


def _model_args(p: argparse.ArgumentParser, seeds: bool = True) -> None:
    if seeds:
        p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="override a model setting (ml_tasks.config.ModelConfig), e.g. --set copy_head=true; "
                        "repeatable")


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = parse_model_overrides(getattr(args, "settings", []))
    for name in ("seed", "epochs"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _generate(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import data

    return data.generate(paths, out_dir=a.out, users=a.users, days=a.days, seed=a.seed,
                         events_per_user_day=a.events_per_user_day, file_format=a.file_format,
                         categories=a.categories, items=a.items)


def _ingest(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import data

    return data.ingest(paths, a.events, a.format, source=a.source, max_reject_ratio=a.max_reject_ratio)


def _build(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import data

    return data.build(paths, full_refresh=a.full_refresh, select=a.select)


def _export(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import data

    return data.export(paths)


def _train(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks import pipelines

    return pipelines.train(paths, overrides=_model_overrides(a))


def _evaluate(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.experiments.evaluate_file import evaluate_file

    extra = {} if a.background_max_sequences is None else {"background_max_sequences": a.background_max_sequences}
    return evaluate_file(paths, a.events, a.format, out=a.out, horizon_days=a.horizon_days, n_seeds=a.seeds,
                         dataset=a.dataset, keep_workspace=a.keep_workspace, overrides=_model_overrides(a),
                         background_events=a.background_events, background_format=a.background_format, **extra)


def _update(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks import pipelines

    return pipelines.update(paths, margin=a.margin, overrides=_model_overrides(a))


def _promote(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import register

    return register.promote(paths, a.version, reason=a.reason)


def _score(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import score

    return score.score_users(paths, active_days=a.active_days)


def _status(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import status

    return status.status(paths)


def _simulate(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.experiments.simulate import simulate

    return simulate(paths, days=a.days, out=a.out, events=a.events, fmt=a.format, overrides=_model_overrides(a))


def _summary(paths: Paths, a: argparse.Namespace) -> Any:
    from ml_tasks.steps import status

    return status.summary(paths)


#: step name -> the function that runs it (each imports its step module when called)
COMMANDS: dict[str, Callable[[Paths, argparse.Namespace], Any]] = {
    "generate": _generate, "ingest": _ingest, "build": _build, "export": _export, "train": _train,
    "evaluate": _evaluate, "update": _update, "promote": _promote, "score": _score, "status": _status,
    "simulate": _simulate, "summary": _summary,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.verbose:  # TensorFlow's Python-side notes (e.g. tf.function retracing) are not for users
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    paths = Paths.from_env(warehouse=args.warehouse, data_dir=args.data_dir)
    if args.data_dir is not None and args.warehouse is None:
        paths = Paths.from_env(data_dir=args.data_dir, warehouse=args.data_dir / "warehouse.duckdb",
                               export_dir=args.data_dir / "exports", artifact_dir=args.data_dir / "artifacts",
                               landing_dir=args.data_dir / "landing")
    try:
        result = COMMANDS[args.command](paths, args)
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
