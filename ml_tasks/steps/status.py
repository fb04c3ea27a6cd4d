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


def _ci(metrics: dict, name: str) -> str:
    lo, hi = metrics.get(f"{name}_ci95") or (float("nan"), float("nan"))
    return f"{metrics.get(name, float('nan')):.4f} [{lo:.3f}, {hi:.3f}]"


def _results_lines(report: dict) -> list[str]:
    """Every method overall and on discover (categories outside the user's history), 95 % intervals."""
    res = report["results"]
    baselines = [n for n in BASELINE_NAMES if n in res]
    lines = [f"{'method':<26}{'ndcg@10 [95 % CI]':>26}{'recall@10':>11}{'mrr':>8}"]
    for name in [MODEL_NAME, ABLATION_NAME, *sorted(baselines, key=lambda n: -res[n]["ndcg@10"])]:
        r = res[name]
        lines.append(f"{name:<26}{_ci(r, 'ndcg@10'):>26}{r['recall@10']:>11.4f}{r['mrr']:>8.4f}")
    if "ndcg@10_discover" not in res[MODEL_NAME]:
        return lines
    n = int(res[MODEL_NAME].get("n_users_discover", 0))
    lines += ["", f"discover: each user's ranking without the categories of their history, relevant = the new "
                  f"categories of the window ({n:,} users)",
              f"{'method':<26}{'ndcg@10 [95 % CI]':>26}{'recall@10':>11}{'mrr':>8}"]
    for name in [MODEL_NAME, ABLATION_NAME, *sorted(baselines, key=lambda b: -res[b]["ndcg@10_discover"])]:
        r = res[name]
        lines.append(f"{name:<26}{_ci(r, 'ndcg@10_discover'):>26}{r['recall@10_discover']:>11.4f}"
                     f"{r['mrr_discover']:>8.4f}")
    return lines


def _comparison_lines(report: dict) -> list[str]:
    comps = report.get("comparisons") or {}
    if not comps:
        return []
    lines = ["", f"comparisons ({report.get('ci_method', 'paired bootstrap over users')}):"]
    for key, c in comps.items():
        other = c.get("baseline") or key.rpartition("/")[2]
        lines.append(f"  {MODEL_NAME} vs {other} on {c['metric']}: {c['ratio']:.3f} x; {c['verdict']}")
    return lines


def _switch_lines(report: dict) -> list[str]:
    sf = report.get("switch_follow")
    if not sf:
        return []
    never = sf["max_events"] + 1
    lines = ["", f"planted interest switches (synthetic truth): events after the switch until the top-1 is the new "
                 f"interest ({sf['n_users_followed']} users switching after the LSTM's training data; "
                 f"{never} = not within {sf['max_events']})",
             f"  and until the discover top-1 names it before the user touched it "
             f"({sf['n_users_discover_followed']} of them had not touched it at the switch)",
             f"{'method':<26}{'median':>8}{'mean':>7}{'followed':>10}{'discover: median':>18}{'named':>7}"]
    top, disc = sf["events_to_follow"], sf["events_to_follow_discover"]
    for name in sorted(top, key=lambda n: (top[n]["mean"], n)):
        t, d = top[name], disc.get(name, {})
        lines.append(f"{name:<26}{t['median']:>8g}{t['mean']:>7.1f}{t['share_within_max']:>10.0%}"
                     f"{d.get('median', float('nan')):>18g}{d.get('share_within_max', float('nan')):>7.0%}")
    return lines


def _shift_lines(report: dict) -> list[str]:
    sh = report.get("shift_flags")
    if not sh:
        return []
    chosen = sh["chosen"]
    how = (f"half-life {chosen['half_life_hours']:g} h, " if chosen.get("half_life_hours") else "")
    lines = ["", f"interest-shift flags against the planted switches: {sh['validation_days']} daily scorings to "
                 f"choose on, {sh['test_days']} to judge (a flag is right when the user switched since the "
                 f"previous scoring or the one before; recall over switches a day old)",
             f"  chosen on validation: {chosen['detector']} ({how}threshold {chosen['threshold']:.3f}); "
             f"the scoring step flags with it",
             f"{'detector (test days)':<26}{'precision':>10}{'recall':>8}{'F1':>7}{'flags':>7}{'switches':>10}"
             f"{'delay h':>9}{'events':>8}"]
    for name, m in sh["test"].items():
        lines.append(f"{name:<26}{m['precision']:>10.2f}{m['recall']:>8.2f}{m['f1']:>7.2f}{m['n_flags']:>7}"
                     f"{m['n_switches']:>10}{m.get('delay_hours_median', float('nan')):>9.1f}"
                     f"{m.get('delay_events_median', float('nan')):>8g}")
    return lines


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
        *_results_lines(report),
        *_comparison_lines(report),
        *_switch_lines(report),
        *_shift_lines(report),
    ]
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
