"""MLflow runs: the store and experiment, parent and nested step runs, params, metrics, plots, datasets."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ml_tasks.config import REPO_ROOT, Paths
from ml_tasks.contracts import EXPERIMENT_NAME, MODEL_NAME
from ml_tasks.evaluation.compare import comparison_fields, interval_metrics


def configure(paths: Paths, experiment: str = EXPERIMENT_NAME) -> str:
    """Point MLflow at the project's store and make sure the experiment exists; returns its id."""
    import mlflow

    if paths.tracking_uri.startswith("sqlite:///"):
        Path(paths.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        if paths.tracking_uri.startswith(("http://", "https://")):
            # a tracking server chooses the location: with --serve-artifacts, mlflow-artifacts:/<id>,
            # uploaded through the server (no folder shared with it)
            location = None
        else:
            artifact_root = paths.mlflow_artifact_root
            artifact_root.mkdir(parents=True, exist_ok=True)
            location = artifact_root.as_uri()
        try:
            experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
        except Exception:  # created concurrently by another task
            experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str:
    """The repository's commit (with ``-dirty`` for local changes), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("-dirty" if dirty else "")) or "unknown"


def start_parent_run(paths: Paths, run_name: str, tags: Mapping[str, str] | None = None,
                     params: Mapping[str, Any] | None = None) -> str:
    """Create the parent run of one pipeline execution (one DAG run); returns its id."""
    import mlflow

    configure(paths)
    all_tags = {"git_commit": git_commit(), **(tags or {})}
    with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
        if params:
            mlflow.log_params(_flat(params))
        return run.info.run_id


@contextmanager
def step_run(paths: Paths, parent_run_id: str | None, step: str,
             tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A nested run for one pipeline step under ``parent_run_id`` (works across processes)."""
    import mlflow

    configure(paths)
    all_tags = {"step": step, "git_commit": git_commit(), **(tags or {})}
    with mlflow.start_run(run_name=step, parent_run_id=parent_run_id, nested=parent_run_id is not None,
                          tags=all_tags) as run:
        yield run


def active_run_id() -> str:
    """The id of the run that is active in this process."""
    import mlflow

    return mlflow.active_run().info.run_id


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_params(_flat(params))


def log_metrics(metrics: Mapping[str, Any], step: int | None = None, prefix: str = "") -> None:
    """Log the numeric entries of ``metrics`` (nested dicts are flattened with ``.``)."""
    import mlflow

    flat = {prefix + k: float(v) for k, v in _flat(metrics).items() if _is_number(v)}
    if flat:
        mlflow.log_metrics({_metric_key(k): v for k, v in flat.items()}, step=step)


def log_history(history: Mapping[str, list[float]]) -> None:
    """Per-epoch training curves: one metric per key, the epoch as step."""
    import mlflow

    for key, values in history.items():
        for epoch, value in enumerate(values):
            mlflow.log_metric(_metric_key(key), float(value), step=epoch)


def log_figure(figure: Any, name: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, f"plots/{name}")
    plt.close(figure)


def log_dict(data: Mapping[str, Any], name: str) -> None:
    import mlflow

    mlflow.log_dict(dict(data), name)


def log_artifacts(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    elif path.exists():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


#: rows of a frame that MLflow's schema inference looks at (it visits every value of every column,
#: list columns included: 30 s of the training run's start on the default data when given all of them)
SCHEMA_SAMPLE_ROWS = 500


def _lineage_view(frame: Any) -> Any:
    """MLflow infers and digests plain columns; array columns become JSON text."""
    out = frame.copy()
    for col in out.columns:
        first = out[col].dropna().iloc[0] if out[col].notna().any() else None
        if first is not None and not isinstance(first, str) and hasattr(first, "__len__"):
            out[col] = out[col].map(lambda v: None if v is None else json.dumps([x.item() if hasattr(x, "item")
                                                                                 else x for x in v]))
    return out


def log_dataset(frame: Any, name: str, source: str, context: str = "training") -> None:
    """Dataset lineage (``mlflow.data``): table name, source file, schema (from the first rows), rows and
    a content digest: the sha256 of the exported Parquet file the run read when ``source`` is one,
    otherwise MLflow's digest of the frame."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    path = Path(source)
    if not path.is_file():
        mlflow.log_input(mlflow.data.from_pandas(_lineage_view(frame), source=source, name=name), context=context)
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    schema = infer_signature(_lineage_view(frame.head(SCHEMA_SAMPLE_ROWS))).inputs
    dataset = MetaDataset(resolve_dataset_source(str(path)), name=name, digest=digest.hexdigest()[:16], schema=schema)
    mlflow.log_input(dataset, context=context, tags={"rows": str(len(frame))})


def log_baseline_runs(paths: Paths, parent_run_id: str | None, report: Mapping[str, Any]) -> dict[str, str]:
    """One run per evaluated method with the same metric names, so the UI compares them side by side;
    each ``<metric>_ci95`` interval as ``<metric>_ci95_lo`` / ``_hi``, and the report's comparisons
    (ratios, intervals, verdicts) on the model's run too."""

    run_ids: dict[str, str] = {}
    protocol = report.get("protocol", {})
    for method, metrics in report.get("results", {}).items():
        with step_run(paths, parent_run_id, f"eval:{method}", tags={"method": method,
                                                                  "dataset": str(report.get("dataset"))}):
            log_params({"method": method, **{f"protocol.{k}": v for k, v in protocol.items()}})
            log_metrics(interval_metrics(metrics))
            if method == MODEL_NAME and report.get("comparisons"):
                comparison_metrics, comparison_params = comparison_fields(report["comparisons"])
                log_metrics(comparison_metrics)
                log_params(comparison_params)
            run_ids[method] = active_run_id()
    return run_ids


# --- helpers ------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool | str)


def _metric_key(key: str) -> str:
    # MLflow accepts letters, digits, _ - . space / and @ is not among them: ndcg@10 -> ndcg_at_10
    return key.replace("@", "_at_")


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value))[:500]
        else:
            out[name] = value
    return out
