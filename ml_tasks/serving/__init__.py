"""Serving: model inputs from a user's recent events (``online``), active users and interest-shift flags
(``scoring``). The pyfunc wrapper lives in ``ml_tasks.tracking.pyfunc`` (MLflow's side of the model)."""
