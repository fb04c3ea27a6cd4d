"""Following a planted interest switch (synthetic data): the measurement lives in
:mod:`ml_tasks.evaluation.switch_follow` (pure, so the train pipeline's evaluate step runs it too when
the data has a synthetic truth file); this name is kept for the experiments' callers.

    switch_follow(model, data, truth, max_events=20, since_ts=None, half_life_hours=72.0) -> dict
"""

from __future__ import annotations

from ml_tasks.evaluation.switch_follow import METHODS, switch_follow

__all__ = ["METHODS", "switch_follow"]
