"""
### train_interest_model

Full retrain of the user-interest model from the warehouse's ML tables (Parquet exports), logged to
MLflow (experiment `user_interest`) as one parent run with a nested run per step:

1. **start_training** — checks the exports, records dataset lineage, config and git commit.
2. **fit_model** — the model, stage by stage: stacked LSTMs (Keras 3) over each user's last events
   before every cutoff (next-event and next-window objectives, early stopping on the validation
   cutoff) → the last LSTM layer's hidden states → PCA fitted on training samples only (components
   by explained variance; the curve is logged) → a logistic-regression predictor over (user,
   category) pairs: PCA interest features × category representation, plus recency/frequency
   features. One fit on everything before the test cutoff; the LSTM stops early on held-back data.
3. **extract_interest_features** — every (user, cutoff)'s interest vector (hidden state on the PCA
   axes), stored as Parquet and logged with a plot of a few users' interest trajectories.
4. **evaluate** — the protocol of `EVALUATION.md` on the test cutoff: the model, the ablation
   without LSTM features and the six baselines (overall and discover rankings, 95 % bootstrap intervals),
   each logged as a run with the same metric names.
5. **register_model** — logs one pyfunc model (`user_interest_model`) and applies the
   champion/challenger gate: the new version becomes `champion` only when it beats the current
   champion by the promotion margin on the same window; otherwise it is tagged `challenger`.
6. **score_users** — scores active users with the champion and writes `user_interest_scores`,
   `user_interest_trajectory` and `user_interest_shifts` to the warehouse (single-writer pool).

Runs weekly (Sunday 02:00 UTC) and on demand. Trigger with params to change seeds, epochs or the
promotion margin, or to add background behaviour (`background_events`: other users' events, cut at the
test cutoff, used for the LSTM and the markov/co-visitation statistics, never evaluated). Daily updates are `update_interest_model`.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, dag, task
from pipeline_common import DEFAULT_ARGS, INTEREST_SCORES, REGISTRY_POOL, START_DATE, WAREHOUSE_POOL, run_step

from ml_tasks.contracts import SOURCE_FORMATS

MODEL_PARAMS = {
    "seed": Param(42, type="integer", minimum=0, description="Random seed (Keras, NumPy, scikit-learn)."),
    "epochs": Param(4, type="integer", minimum=1, maximum=200,
                    description="Maximum LSTM epochs (early stopping on the validation cutoff)."),
    "max_train_sequences": Param(12000, type="integer", minimum=100,
                                 description="(user, cutoff) sequences per epoch (a random subsample above it)."),
    "promotion_margin": Param(0.0, type="number", minimum=0, maximum=1,
                              description="Relative NDCG@10 gain over the champion needed to promote."),
    "background_events": Param(None, type=["null", "string"],
                               description="Other users' events (a file the workers can read), e.g. "
                                           "data/samples/taobao_userbehavior/UserBehavior_other_users.csv.gz: "
                                           "cut at the test cutoff, they train the LSTM's next-event objective "
                                           "and the markov/co-visitation statistics, never evaluated or scored. "
                                           "Empty: none."),
    "background_format": Param("generic", type="string", enum=list(SOURCE_FORMATS),
                               description="Layout of background_events (the ingest formats)."),
    "model_settings": Param({}, type="object",
                            description="Other ModelConfig fields for this run, e.g. "
                                        '{"copy_head": true, "window_loss_weight": 1.0}; checked by name and type, '
                                        "logged with the run. The fields above take precedence."),
}


@dag(
    dag_id="train_interest_model",
    schedule=CronTriggerTimetable("0 2 * * 0", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["ml", "train", "mlflow"],
    params=MODEL_PARAMS,
)
def train_interest_model():
    @task
    def start_training(params=None) -> dict:
        return run_step("start_training", settings=params["model_settings"],
                     overrides={"seed": params["seed"], "epochs": params["epochs"],
                                "max_train_sequences": params["max_train_sequences"]},
                     background={"events": params["background_events"], "format": params["background_format"]})

    @task
    def fit_model(_: dict) -> dict:
        return run_step("fit_model")

    @task
    def extract_interest_features(_: dict) -> dict:
        return run_step("extract_interest_features")

    @task
    def evaluate(_: dict) -> dict:
        return run_step("evaluate")

    @task(pool=REGISTRY_POOL)
    def register_model(_: dict, params=None) -> dict:
        return run_step("register_model", margin=params["promotion_margin"])

    @task(pool=WAREHOUSE_POOL, outlets=[INTEREST_SCORES])
    def score_users(_: dict) -> dict:
        return run_step("score_users")

    started = start_training()
    score_users(register_model(evaluate(extract_interest_features(fit_model(started)))))


train_interest_model()
