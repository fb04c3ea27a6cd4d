"""The package's one door to MLflow: runs and metrics (``runs``), the registry (``registry``) and the
pyfunc model (``pyfunc``). No other module of ``ml_tasks`` imports ``mlflow`` (``make lint`` checks it);
``mlflow`` itself is imported inside functions, so importing this package is cheap.
"""

from ml_tasks.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG,
    RegistryError,
    alias_version,
    client,
    find_version,
    latest_runs,
    load_fitted_model,
    log_interest_model,
    model_uri,
    set_alias,
    set_version_tags,
    tree_sha256,
    version_info,
)
from ml_tasks.tracking.runs import (
    active_run_id,
    configure,
    git_commit,
    log_artifacts,
    log_baseline_runs,
    log_dataset,
    log_dict,
    log_figure,
    log_history,
    log_metrics,
    log_params,
    start_parent_run,
    step_run,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "DIGEST_TAG", "RegistryError", "find_version", "tree_sha256", "active_run_id", "alias_version", "client", "configure", "git_commit",
    "latest_runs", "load_fitted_model", "log_artifacts", "log_baseline_runs", "log_dataset", "log_dict",
    "log_figure", "log_history", "log_interest_model", "log_metrics", "log_params", "model_uri",
    "set_alias", "set_version_tags", "start_parent_run", "step_run", "version_info",
]
