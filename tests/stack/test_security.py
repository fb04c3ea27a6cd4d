"""Logins and integrity on the stack: MLflow's basic auth, Airflow's API login, artifacts served by MLflow, a
model version whose files changed refused before anything is unpickled, secrets only in mode-600 files."""

from __future__ import annotations

import json
import pickle
import stat
import urllib.error
from pathlib import Path

import pytest

from tests.stack.conftest import mlflow_http

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_mlflow_asks_for_a_login_and_refuses_unauthenticated_writes(stack):
    url = stack.server.mlflow_url
    status, headers, _ = mlflow_http(url + "/")
    assert status == 401
    assert {k.lower(): v for k, v in headers.items()}["www-authenticate"].startswith("Basic")
    assert mlflow_http(url + "/health")[0] == 200  # the health check needs no login
    name = "written-without-a-login"
    assert mlflow_http(url + "/api/2.0/mlflow/experiments/create", "POST", None, {"name": name})[0] == 401
    assert mlflow_http(url + "/api/2.0/mlflow/registered-models/create", "POST", None, {"name": name})[0] == 401
    user, password = stack.server.mlflow_login()
    wrong = mlflow_http(url + "/api/2.0/mlflow/experiments/create", "POST", (user, password + "x"), {"name": name})
    assert wrong[0] == 401
    status, _, body = mlflow_http(url + f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}",
                                  login=stack.server.mlflow_login(admin=True))
    assert status == 404, body  # none of the refused writes created anything
    assert mlflow_http(url + "/api/2.0/mlflow/experiments/search?max_results=5", login=(user, password))[0] == 200


def test_airflow_api_needs_a_login(stack):
    api = stack.api
    with pytest.raises(urllib.error.HTTPError) as refused:
        api.call("GET", "/api/v2/dags", token=None)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        api.call("POST", "/auth/token", {"username": stack.server.username, "password": "not-the-password"},
                 token=None)
    assert wrong.value.code == 401
    health = api.call("GET", "/api/v2/monitor/health", token=None)
    assert {k: health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == \
        dict.fromkeys(("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")


def _artifact_folder(stack, version: int) -> Path:
    """Where the MLflow server keeps a version's files (its --artifacts-destination)."""
    from ml_tasks import tracking
    from ml_tasks.contracts import REGISTERED_MODEL_NAME

    with stack.pipeline() as paths:
        client = tracking.client(paths)
        source = client.get_model_version(REGISTERED_MODEL_NAME, str(version)).source  # models:/<model id>
        assert source.startswith("models:/m-"), source
        location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    assert location.startswith("mlflow-artifacts:/"), location
    return stack.root / "stack" / "mlflow" / "artifacts" / location.removeprefix("mlflow-artifacts:/")


def test_artifacts_go_through_the_mlflow_server(stack, first_runs):
    import mlflow

    with stack.pipeline():
        experiment = mlflow.get_experiment_by_name("user_interest")
    assert experiment.artifact_location.startswith("mlflow-artifacts:/"), experiment.artifact_location
    for version in stack.versions():
        folder = _artifact_folder(stack, version)
        assert (folder / "MLmodel").is_file() and (folder / "python_model.pkl").is_file(), folder


class _Marker:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_changed_model_files_are_refused_before_unpickling(stack, first_runs, nothing_new_run):
    from ml_tasks import tracking

    champion = stack.alias("champion")
    version = next(v for v in stack.versions() if v != champion)  # the refused one: not used afterwards
    pickled = _artifact_folder(stack, version) / "python_model.pkl"
    original = pickled.read_bytes()
    marker = stack.root / "unpickled"
    pickled.write_bytes(pickle.dumps(_Marker(str(marker))))
    try:
        with stack.pipeline() as paths, pytest.raises(tracking.RegistryError) as refused:
            tracking.load_fitted_model(paths, version)
        assert "its files changed after registration" in str(refused.value)
        assert f"model version {version} of user_interest_model" in str(refused.value)
        assert not marker.exists()
    finally:
        pickled.write_bytes(original)
    import tempfile

    import mlflow

    with stack.pipeline(), tempfile.TemporaryDirectory() as tmp:  # restored: the digest matches again
        local = Path(mlflow.artifacts.download_artifacts(tracking.model_uri(version), dst_path=tmp))
        assert tracking.tree_sha256(local) == stack.versions()[version]["tags"]["model_sha256"]


def test_generated_secrets_stay_out_of_logs(stack, first_runs, nothing_new_run):
    """Every file of the stack that holds a generated secret is mode 600 and one of the four that must hold
    one; no log (the stack's own, the components', the tasks') holds any."""
    root = stack.root / "stack"
    secrets = {k: v for k, v in stack.server.secrets.items() if v}
    assert len(secrets) == 10
    holders = {}
    scanned = 0
    for path in [*root.rglob("*"), stack.server.log_path]:
        if not path.is_file() or (root / "postgres" / "data") in path.parents:
            continue
        data = path.read_bytes()
        scanned += 1
        found = sorted(k for k, v in secrets.items() if v.encode() in data)
        if found:
            holders[str(path.relative_to(root) if root in path.parents else path)] = (
                found, stat.S_IMODE(path.stat().st_mode))
    assert scanned > 50  # the task logs of every run are among them
    assert set(holders) == {"secrets.env", "mlflow/basic_auth.ini", "redis/redis.conf",
                            "airflow/simple_auth_manager_passwords.json.generated"}, holders
    assert all(mode == 0o600 for _, mode in holders.values()), holders
    assert holders["secrets.env"][0] == sorted(secrets)
    assert stat.S_IMODE(stack.server.log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "logs").stat().st_mode) == 0o700
    state = json.loads((root / "stack.json").read_text()) if (root / "stack.json").exists() else {}
    assert not any(v in json.dumps(state) for v in secrets.values())
