"""What the pipeline holds now: the champion and the last decision (``status``), the last run (``summary``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ml_tasks import tracking
from ml_tasks.config import Paths
from ml_tasks.contracts import ABLATION_NAME, BASELINE_NAMES, MODEL_NAME
from ml_tasks.data import serving_store
from ml_tasks.errors import PipelineError
from ml_tasks.steps.state import decisions_path, load_data


def status(paths: Paths) -> dict:
    """Champion, its metrics, scored users, last update time and the last gate decision."""
    champion = tracking.alias_version(paths, tracking.CHAMPION)
    info = tracking.version_info(paths, champion) if champion is not None else {}
    decisions = decisions_path(paths)
    last = json.loads(decisions.read_text().splitlines()[-1]) if decisions.exists() else None
    scored = serving_store.read_status(paths.warehouse)
    metrics = {k.replace("_at_", "@"): v for k, v in info.get("metrics", {}).items()
               if k in ("ndcg_at_10", "recall_at_10", "mrr")}
    return {
        "champion_version": champion,
        "champion_metrics": metrics,
        "challenger_version": tracking.alias_version(paths, tracking.CHALLENGER),
        "n_scored_users": scored.get("n_scored_users", 0),
        "scored_at": scored.get("scored_at"),
        "last_update_time": (last or {}).get("decided_at"),
        "last_gate_decision": last,
    }


def summary(paths: Paths) -> str:
    """What ``make run`` prints at the end: data processed, metrics vs baselines, where to look."""
    pointer = paths.data_dir / "last_run.json"
    if not pointer.exists():
        raise PipelineError("no pipeline run recorded yet; run `make run` first")
    last = json.loads(pointer.read_text())
    run_dir = Path(last["run_dir"])
    report = json.loads((run_dir / "report.json").read_text())
    data = load_data(paths)
    lines = [
        "=" * 72,
        "Interest-evolution pipeline: summary",
        "=" * 72,
        f"events processed   {len(data.events):>12,}   users {data.events['user_id'].nunique():,}"
        f"   categories {len(data.categories):,}",
        f"ML samples         {len(data.sequences):>12,}   (user, cutoff) sequences; "
        f"{len(data.pair_features):,} (user, category) feature rows",
        f"evaluated users    {report['protocol']['n_eval_users']:>12,}   at the test cutoff "
        f"(horizon {report['protocol']['horizon_days']:g} days, full ranking of "
        f"{report['protocol']['n_categories']:,} categories)",
        "",
        f"{'method':<26}{'ndcg@10':>10}{'recall@10':>11}{'mrr':>8}",
    ]
    order = [MODEL_NAME, ABLATION_NAME, *sorted(BASELINE_NAMES, key=lambda n: -report["results"][n]["ndcg@10"])]
    for name in order:
        r = report["results"][name]
        lines.append(f"{name:<26}{r['ndcg@10']:>10.4f}{r['recall@10']:>11.4f}{r['mrr']:>8.4f}")
    reg = last.get("registered") or {}
    score = last.get("scoring") or {}
    lines += [
        "",
        f"recency_decay half-life (chosen on validation): {report.get('half_life_hours')} h",
        f"MLflow parent run   {last.get('parent_run_id')}   (experiment user_interest)",
        f"registered model    user_interest_model v{reg.get('version')}: "
        f"{'promoted to @champion' if reg.get('promoted') else 'kept as @challenger'} ({reg.get('reason')})",
        f"scored users        {score.get('n_scored_users', 0):,} active users -> serving.user_interest_scores; "
        f"{score.get('n_shifts', 0)} interest shifts flagged",
        f"warehouse           {paths.warehouse}",
        "",
        "Look around:",
        "  make airflow    # Airflow UI on http://127.0.0.1:8080 (DAG runs of this data)",
        "  make mlflow     # MLflow UI on http://127.0.0.1:5000 (runs, baselines, registry)",
        "  make update     # the periodic update DAG once",
        "  .venv/bin/python -m ml_tasks status",
    ]
    return "\n".join(lines)
