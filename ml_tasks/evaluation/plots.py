"""Figures logged to MLflow. Matplotlib with the Agg backend; every function returns a Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=110)


def explained_variance(curve: Mapping[str, Any]):
    """Cumulative explained variance of the PCA over components, with the chosen count marked."""
    fig, ax = _figure()
    ratios = np.asarray(curve.get("explained_variance_ratio") or curve.get("ratios") or [], dtype=float)
    cumulative = np.cumsum(ratios) if len(ratios) else np.asarray(curve.get("cumulative", []), dtype=float)
    xs = np.arange(1, len(cumulative) + 1)
    ax.plot(xs, cumulative, marker="o", ms=3, label="cumulative")
    if len(ratios):
        ax.bar(xs, ratios, alpha=0.4, label="per component")
    chosen = curve.get("n_components")
    if chosen:
        ax.axvline(int(chosen), color="k", ls="--", lw=1, label=f"chosen: {int(chosen)}")
    ax.set(
        xlabel="principal component",
        ylabel="explained variance",
        ylim=(0, 1.02),
        title="PCA of the LSTM interest embeddings",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def model_vs_baselines(report: Mapping[str, Any], metric: str = "ndcg@10"):
    """Horizontal bars: every method's metric in a report (EVALUATION.md format), best on top; the error
    bars are the 95 % bootstrap intervals where the report has them (``<metric>_ci95``), else the std."""
    results = report["results"]
    names = sorted(
        (n for n in results if np.isfinite(results[n].get(metric, np.nan))), key=lambda n: results[n][metric]
    )
    values = [results[n][metric] for n in names]
    errors = np.array(
        [
            [v - results[n][f"{metric}_ci95"][0], results[n][f"{metric}_ci95"][1] - v]
            if f"{metric}_ci95" in results[n]
            else [results[n].get(f"{metric}_std", 0.0)] * 2
            for n, v in zip(names, values, strict=True)
        ]
    ).reshape(-1, 2).T
    fig, ax = _figure(7.0, 0.45 * len(names) + 1.2)
    colors = [
        "tab:orange" if n in ("lstm_pca_predictor", "predictor_without_lstm") else "tab:blue" for n in names
    ]
    ax.barh(names, values, xerr=errors, color=colors)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    n_users = report.get("protocol", {}).get("n_eval_users")
    if metric.endswith("_discover") and names:
        n_users = int(results[names[-1]].get("n_users_discover", 0))
    ax.set(xlabel=metric, title=f"{report.get('dataset', '')}: model vs baselines ({n_users} users)")
    fig.tight_layout()
    return fig


def trajectories(embeddings, users: Sequence[str] | None = None, n_users: int = 6):
    """2-D paths of a few users' interest vectors (first two principal components) over cutoffs.

    ``embeddings``: ``user_id, cutoff_ts, pc_1, pc_2, ...`` (``ml_tasks.model.score.interest_embeddings``).
    Without ``users``, picks those whose vector travelled furthest.
    """
    frame = embeddings.sort_values(["user_id", "cutoff_ts"]).copy()
    if "pc_2" not in frame.columns:  # a one-component PCA: plot it against time instead
        frame["pc_2"] = frame["pc_1"]
        frame["pc_1"] = (frame["cutoff_ts"] - frame["cutoff_ts"].min()) / 86_400.0
    if users is None:
        start = frame.groupby("user_id")[["pc_1", "pc_2"]].first()
        end = frame.groupby("user_id")[["pc_1", "pc_2"]].last()
        moved = np.hypot(end["pc_1"] - start["pc_1"], end["pc_2"] - start["pc_2"])
        users = list(moved.sort_values(ascending=False).index[:n_users])
    fig, ax = _figure(6.5, 5.0)
    for user in users:
        path = frame[frame["user_id"] == user]
        ax.plot(path["pc_1"], path["pc_2"], marker="o", ms=3, lw=1, label=str(user))
        ax.annotate("end", (path["pc_1"].iloc[-1], path["pc_2"].iloc[-1]), fontsize=7)
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Interest trajectories over cutoffs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def metrics_over_days(per_day: Sequence[Mapping[str, Any]], methods: Sequence[str], metric: str = "ndcg@10"):
    """A simulation's metric per replayed day for each method."""
    fig, ax = _figure()
    days = [r["day"] for r in per_day]
    for name in methods:
        ax.plot(days, [r[name][metric] for r in per_day], marker="o", label=name)
    ax.set(xlabel="simulated day", ylabel=metric, title="Periodic updates vs a never-updated model")
    ax.legend()
    fig.tight_layout()
    return fig


def switch_follow(result: Mapping[str, Any], discover: bool = False):
    """Share of planted-switch users whose top-1 category is the new interest, k events after the switch
    (``ml_tasks.evaluation.switch_follow``), one line per method; ``discover``: the share of the users
    who had not touched the new interest at the switch whose top-1 outside their history has named it
    by k events."""
    key, stats = ("share_named_by_event_discover", "events_to_follow_discover") if discover else (
        "share_following_by_event", "events_to_follow")
    fig, ax = _figure()
    most = result.get("max_events", np.inf)
    for name, share in result.get(key, {}).items():
        median = result.get(stats, {}).get(name, {}).get("median")
        label = name if median is None else f"{name} (median {median:g} events)"
        if median is not None and median > most:
            label = f"{name} (median > {most} events)"
        ax.plot(range(len(share)), share, marker="o", ms=3, label=label)
    if discover:
        n, ylabel = result.get("n_users_discover_followed"), "share whose discover top-1 named it"
        title = f"Naming the new interest before the user touches it ({n} users)"
    else:
        n, ylabel = result.get("n_users_followed"), "share whose top-1 is the new interest"
        title = f"Following a planted interest switch ({n} users)"
    ax.set(xlabel="events after the switch", ylabel=ylabel, ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
