"""Every plot returns a matplotlib Figure that draws what its data says (Agg backend, no display)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.evaluation import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_explained_variance_marks_the_chosen_components():
    ratios = [0.5, 0.3, 0.15, 0.05]
    fig = plots.explained_variance({"explained_variance_ratio": ratios, "n_components": 2})
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.cumsum(ratios))
    assert any("chosen: 2" in t.get_text() for t in ax.get_legend().get_texts())


def test_model_vs_baselines_has_one_bar_per_method_best_on_top():
    report = {
        "dataset": "d",
        "protocol": {"n_eval_users": 5},
        "results": {
            "lstm_pca_predictor": {"ndcg@10": 0.42, "ndcg@10_std": 0.01},
            "predictor_without_lstm": {"ndcg@10": 0.40},
            "popularity": {"ndcg@10": 0.2},
        },
    }
    fig = plots.model_vs_baselines(report)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert widths == sorted(widths) and widths[-1] == pytest.approx(0.42)
    assert "5 users" in ax.get_title()


def test_trajectories_draw_one_path_per_user():
    emb = pd.DataFrame(
        {
            "user_id": np.repeat(["a", "b", "c"], 4),
            "cutoff_ts": np.tile([1, 2, 3, 4], 3),
            "pc_1": np.arange(12.0),
            "pc_2": np.arange(12.0) ** 0.5,
        }
    )
    fig = plots.trajectories(emb, n_users=2)
    assert len(fig.axes[0].lines) == 2
    fig = plots.trajectories(emb.drop(columns="pc_2"), users=["a"])  # one component: against time
    assert len(fig.axes[0].lines) == 1


def test_switch_follow_curve_per_method():
    result = {
        "n_users_followed": 10,
        "share_following_by_event": {
            "lstm_pca_predictor": [0.0, 0.5, 0.9],
            "user_frequency": [0.0, 0.1, 0.2],
        },
        "events_to_follow": {"lstm_pca_predictor": {"median": 1.0}, "user_frequency": {"median": 3.0}},
    }
    fig = plots.switch_follow(result)
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.0, 0.5, 0.9])
    assert "10 users" in ax.get_title()
    result.update(n_users_discover_followed=4, share_named_by_event_discover={"markov": [0.25, 0.5]},
                  events_to_follow_discover={"markov": {"median": 1.0}})
    ax = plots.switch_follow(result, discover=True).axes[0]
    assert len(ax.lines) == 1 and "before the user touches it (4 users)" in ax.get_title()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.25, 0.5])
