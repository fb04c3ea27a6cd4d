"""
### update_interest_model

The periodic update that lets the model follow users as new behaviour arrives. Runs daily
(03:00 UTC) **or** as soon as `build_warehouse` publishes new ML tables (asset **ml_sequences**),
whichever comes first:

1. **start_update** — opens the MLflow parent run and finds the current `champion` version.
2. **refresh_warehouse** — incremental `dbt build` + Parquet export (single-writer pool), so a
   time-triggered run also sees rows ingested since the last build.
3. **fine_tune_challenger** — a challenger fine-tuned from the champion's weights on the samples
   that arrived since the champion was fitted (`epochs` passes), then PCA and predictor refitted on
   the newest labelled window (if there is no champion yet it trains one from scratch). With no new
   data the challenger equals the champion and the gate keeps the champion.
4. **evaluate** — champion and challenger on the same latest window, with the baselines.
5. **register_model** — the gate: the challenger becomes `champion` only when its NDCG@10 beats
   the champion's by the promotion margin; otherwise it keeps the alias `challenger`. The decision
   and both sets of metrics are recorded in MLflow (run and model-version tags).
6. **score_users** — scores every active user with the champion and writes
   `user_interest_scores`, `user_interest_trajectory` and `user_interest_shifts`.

Rollback: trigger with `rollback_to_version` set to point `champion` at an earlier version
(same as `python -m ml_tasks promote --version N`); the other steps are then skipped.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from pipeline_common import (
    DEFAULT_ARGS,
    INTEREST_SCORES,
    ML_SEQUENCES,
    REGISTRY_POOL,
    START_DATE,
    WAREHOUSE_POOL,
    run_step,
)


@dag(
    dag_id="update_interest_model",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[ML_SEQUENCES]
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["ml", "update", "mlflow"],
    params={
        "epochs": Param(1, type="integer", minimum=1, maximum=50,
                        description="Fine-tuning epochs for the challenger."),
        "max_train_sequences": Param(12000, type="integer", minimum=100,
                                     description="Sequences per epoch when a first model is trained."),
        "promotion_margin": Param(0.01, type="number", minimum=0, maximum=1,
                                  description="Relative NDCG@10 gain over the champion needed to promote."),
        "rollback_to_version": Param(None, type=["null", "integer"], minimum=1,
                                     description="Point the champion alias at this version and stop."),
    },
)
def update_interest_model():
    @task.short_circuit(pool=REGISTRY_POOL)  # a rollback moves the champion alias
    def start_update(params=None) -> dict | bool:
        """Rollback requests end the run here; otherwise open the MLflow parent run."""
        from ml_tasks.config import Paths
        from ml_tasks.steps import register

        if params["rollback_to_version"]:
            register.promote(Paths.from_env(), int(params["rollback_to_version"]), reason="rollback via DAG param")
            return False
        return run_step("start_update", overrides={"epochs": params["epochs"],
                                                   "max_train_sequences": params["max_train_sequences"]})

    @task(pool=WAREHOUSE_POOL)
    def refresh_warehouse(_: dict) -> dict:
        return run_step("refresh_warehouse")

    @task
    def fine_tune_challenger(_: dict) -> dict:
        return run_step("fine_tune_challenger")

    @task
    def evaluate(_: dict) -> dict:
        return run_step("evaluate")

    @task(pool=REGISTRY_POOL)
    def register_model(_: dict, params=None) -> dict:
        return run_step("register_model", margin=params["promotion_margin"])

    @task(pool=WAREHOUSE_POOL, outlets=[INTEREST_SCORES])
    def score_users(_: dict) -> dict:
        return run_step("score_users")

    score_users(register_model(evaluate(fine_tune_challenger(refresh_warehouse(start_update())))))


update_interest_model()
