"""One source of truth for the scale-out stack's settings: ``devstack.env.STACK_SETTINGS`` is what
``.env.example`` lists, what ``docker-compose.yml`` reads and what ``python -m devstack stack`` reads, with the
same defaults; and both deployments configure Airflow, Celery and MLflow the same way. No stack is started."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from devstack.credentials import COMPOSE_SECRETS, compose_env_text, stack_secrets
from devstack.env import SETTINGS, STACK_SETTINGS
from devstack.stack import StackConfig, airflow_stack_env, mlflow_command, mlflow_stack_env, worker_command

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?::?([-?])([^}]*))?\}")  # not $${...}: compose's escaped $


def _env_example() -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in (REPO / ".env.example").read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")]


def test_env_example_is_the_settings_table():
    assert _env_example() == [(s.name, s.default) for s in STACK_SETTINGS]
    assert set(COMPOSE_SECRETS) == {s.name for s in STACK_SETTINGS if s.secret}
    assert all(s.default == "" for s in STACK_SETTINGS if s.secret)
    assert {s.scope for s in STACK_SETTINGS} == {"both", "stack", "compose"}


def test_compose_reads_the_settings_with_the_same_defaults():
    used: dict[str, set[tuple[str, str]]] = {}
    for name, kind, value in VARIABLE.findall(COMPOSE.read_text()):
        used.setdefault(name, set()).add((kind, value))
    assert set(used) == {s.name for s in STACK_SETTINGS if s.scope in ("both", "compose")}
    for name, forms in used.items():
        setting = SETTINGS[name]
        for kind, value in forms:
            if setting.secret:
                assert kind == "?", f"{name} must be required (:?) in docker-compose.yml"
            else:
                assert (kind, value) == ("-", setting.default), f"{name}: {kind}{value} != -{setting.default}"


def test_local_stack_reads_the_settings_with_the_same_defaults(tmp_path):
    cfg = StackConfig.from_env({}, root=tmp_path)
    assert (cfg.airflow_port, cfg.mlflow_port, cfg.postgres_port, cfg.redis_port, cfg.workers, cfg.concurrency,
            cfg.mlflow_admin, cfg.mlflow_user) == tuple(
        int(SETTINGS[n].default) if SETTINGS[n].default.isdigit() else SETTINGS[n].default
        for n in ("AIRFLOW_PORT", "MLFLOW_PORT", "POSTGRES_PORT", "REDIS_PORT", "AIRFLOW_WORKERS",
                  "AIRFLOW_WORKER_CONCURRENCY", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_TRACKING_USERNAME"))
    cfg = StackConfig.from_env({"AIRFLOW_PORT": "1", "MLFLOW_PORT": "2", "POSTGRES_PORT": "3", "REDIS_PORT": "4",
                                "AIRFLOW_WORKERS": "3", "AIRFLOW_WORKER_CONCURRENCY": "5",
                                "MLFLOW_TRACKING_USERNAME": "etl"}, root=tmp_path)
    assert (cfg.airflow_port, cfg.mlflow_port, cfg.postgres_port, cfg.redis_port, cfg.workers, cfg.concurrency,
            cfg.mlflow_user) == (1, 2, 3, 4, 3, 5, "etl")
    assert cfg.worker_names() == ["worker-1", "worker-2", "worker-3"]


def _compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _shape(value: str) -> str:
    """A value with compose's defaults filled in, secrets, passwords in URLs and host names blanked: what
    both deployments must share."""
    value = VARIABLE.sub(lambda m: m.group(3) if m.group(2) == "-" else "VAR", str(value))
    return re.sub(r"@[\w.-]+(:\d+)?/", "@HOST/", re.sub(r"://(\w*):[^@]+@", r"://\1:VAR@", value))


def test_both_deployments_configure_airflow_celery_and_mlflow_alike(tmp_path):
    cfg = StackConfig.from_env({}, root=tmp_path)
    secrets = stack_secrets(tmp_path / "secrets.env", {})
    local_af = airflow_stack_env(cfg, secrets, {"PATH": "/usr/bin", "IEP_SERVER_ID": "x"})
    services = _compose_services()
    compose_af = services["airflow-scheduler"]["environment"]
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY", "MLFLOW_TRACKING_USERNAME"):
        assert _shape(local_af[key]) == _shape(compose_af[key]), key
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                "MLFLOW_TRACKING_PASSWORD"):
        assert key in compose_af and local_af[key] in secrets.values(), key
    assert local_af["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"].lower() == \
        str(compose_af["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"]).lower() == "false"
    assert "AIRFLOW_ADMIN_PASSWORD" not in compose_af  # compose: airflow-init only; the stack: its supervisor

    local_ml, compose_ml = mlflow_stack_env(cfg, secrets, {"PATH": "/usr/bin", "IEP_SERVER_ID": "x"}), \
        services["mlflow"]["environment"]
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"):
        assert _shape(local_ml[key]) == _shape(compose_ml[key]), key
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH"):
        assert key in compose_ml and key in local_ml, key
    local_cmd, compose_cmd = mlflow_command(cfg), services["mlflow"]["command"]
    for flag in ("--serve-artifacts", "--artifacts-destination", "--app-name"):
        assert flag in local_cmd and flag in compose_cmd, flag
    assert local_cmd[local_cmd.index("--app-name") + 1] == compose_cmd[compose_cmd.index("--app-name") + 1] \
        == "basic-auth"
    assert "--default-artifact-root" not in local_cmd + compose_cmd  # so artifacts go as mlflow-artifacts:/
    assert worker_command("worker-1")[1:3] == services["airflow-worker"]["command"].split() == ["celery", "worker"]
    # no secret on a command line (where `ps` shows it)
    assert not any(v in " ".join(local_cmd + worker_command("worker-1")) for v in secrets.values())


def test_secrets_generated_once_mode_600(tmp_path):
    path = tmp_path / "secrets.env"
    first = stack_secrets(path, {})
    assert set(first) == set(COMPOSE_SECRETS) and len(set(first.values())) == len(first)
    assert path.stat().st_mode & 0o777 == 0o600
    assert stack_secrets(path, {}) == first
    chosen = stack_secrets(path, {"AIRFLOW_ADMIN_PASSWORD": "chosen-by-the-operator"})
    assert chosen == {**first, "AIRFLOW_ADMIN_PASSWORD": "chosen-by-the-operator"}
    env = dict(line.split("=", 1) for line in compose_env_text((REPO / ".env.example").read_text()).splitlines()
               if "=" in line and not line.startswith("#"))
    assert all(len(env[k]) >= 32 for k in COMPOSE_SECRETS)
