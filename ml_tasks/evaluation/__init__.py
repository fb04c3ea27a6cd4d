"""Evaluation (EVALUATION.md): ranking ``metrics``, the mandatory ``baselines``, the ``protocol`` that runs
them beside the model on the same users, the champion ``gate`` and the ``plots``. Pure; no DuckDB, no
MLflow."""
