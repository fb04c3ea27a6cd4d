"""The devstack package without Airflow or MLflow: settings, secrets, the CLI, the process supervisor."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devstack import env as devenv
from devstack.__main__ import parser
from devstack.credentials import ensure_password, read_password
from devstack.provision import dbt_manifest_stale
from devstack.supervisor import tagged_processes

REPO = Path(__file__).resolve().parents[2]


def test_compose_env_needs_only_the_standard_library(tmp_path):
    """``python3 -m devstack compose-env`` runs without the venv: no site-packages (-S), no third party."""
    out = tmp_path / ".env"
    code = ("import json, sys\n"
            "from devstack.__main__ import main\n"
            f"rc = main(['compose-env', '-o', {str(out)!r}])\n"
            "tops = {m.split('.')[0] for m in sys.modules}\n"
            "print(json.dumps([rc, sorted(t for t in tops if t not in sys.stdlib_module_names)]))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rc, third_party = json.loads(proc.stdout.splitlines()[-1])
    assert rc == 0 and set(third_party) <= {"__main__", "devstack"}, third_party
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    again = subprocess.run([sys.executable, "-S", "-m", "devstack", "compose-env", "-o", str(out)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr


def test_cli_flags():
    args = parser().parse_args(["airflow", "--port", "9", "--no-triggerer", "--timeout", "5", "--host", "::"])
    assert (args.server, args.port, args.no_triggerer, args.timeout, args.host) == ("airflow", 9, True, 5.0, "::")
    args = parser().parse_args(["mlflow"])
    assert (args.host, args.port, args.timeout) == ("127.0.0.1", 5000, 300.0)
    args = parser().parse_args(["model", "--alias", "challenger"])
    assert (args.port, args.alias) == (5001, "challenger")
    args = parser().parse_args(["compose-env", "-o", "x", "--force"])
    assert (args.output, args.force) == (Path("x"), True)
    assert parser().parse_args(["provision"]).server == "provision"


def test_mlflow_store_is_what_ml_tasks_config_reads(tmp_path, monkeypatch):
    from ml_tasks.config import Paths

    data = tmp_path / "data"
    env = {"IEP_DATA_DIR": str(data), "IEP_MLFLOW_ARTIFACT_ROOT": ""}
    monkeypatch.setenv("IEP_DATA_DIR", "/elsewhere")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    before = dict(os.environ)
    uri, root = devenv.mlflow_store(env)
    assert uri == f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    assert root == data / "mlflow" / "artifacts"  # an empty value counts as unset
    assert dict(os.environ) == before  # the process's environment is left as it was
    monkeypatch.setenv("IEP_DATA_DIR", str(data))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert devenv.mlflow_store() == (Paths.from_env().tracking_uri, Paths.from_env().mlflow_artifact_root)
    where = devenv.pipeline_locations({"IEP_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": "postgresql://x/y",
                                       "IEP_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "a")})
    assert (where.data_dir, where.tracking_uri, where.mlflow_artifact_root) == (data, "postgresql://x/y",
                                                                                tmp_path / "a")


def test_airflow_env_follows_host_and_port_and_keeps_the_rest():
    base = {"AIRFLOW_HOME": "/h", "AIRFLOW__CORE__PARALLELISM": "8", "AIRFLOW__API__PORT": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "IEP_AIRFLOW_USER": "ops"}
    env = devenv.airflow_env("127.0.0.2", 8999, base)
    assert env["AIRFLOW__API__PORT"] == "8999" and env["AIRFLOW__API__HOST"] == "127.0.0.2"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.2:8999/execution/"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "ops:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == f"/h/{devenv.PASSWORD_FILE_NAME}"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)


def test_admin_password_generated_once_mode_600(tmp_path):
    env = devenv.airflow_env(base={"AIRFLOW_HOME": str(tmp_path)})
    assert read_password(env) is None
    user, password, path = ensure_password(env)
    assert user == "admin" and len(password) >= 20 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_password(env)[1] == password and read_password(env) == ("admin", password)
    assert ensure_password({**env, "AIRFLOW_ADMIN_PASSWORD": "chosen"})[1] == "chosen"
    assert json.loads(path.read_text()) == {"admin": "chosen"}


def test_dbt_manifest_staleness(tmp_path):
    assert not dbt_manifest_stale(tmp_path)  # not a dbt project
    (tmp_path / "dbt_project.yml").write_text("name: x\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.sql").write_text("select 1\n")
    assert dbt_manifest_stale(tmp_path)
    (tmp_path / "target").mkdir()
    manifest = tmp_path / "target" / "manifest.json"
    manifest.write_text("{}")
    os.utime(tmp_path / "models" / "a.sql", (time.time() - 60,) * 2)
    os.utime(tmp_path / "dbt_project.yml", (time.time() - 60,) * 2)
    assert not dbt_manifest_stale(tmp_path)
    (tmp_path / "models" / "b.sql").write_text("select 2\n")
    os.utime(manifest, (time.time() - 30,) * 2)
    assert dbt_manifest_stale(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_supervisor_leaves_no_process_behind(tmp_path, sig):
    """A server whose process tree orphans a grandchild (its own session, ignores SIGTERM) is stopped
    whole by Ctrl-C or SIGTERM: the subreaper gets the orphan back and kills it."""
    marker = uuid.uuid4().hex
    tree = "setsid sh -c 'trap \"\" TERM; sleep 300' & sleep 300 & wait"
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from devstack.supervisor import supervise_one\n"
            f"sys.exit(supervise_one(dict(__import__('os').environ), Path({str(tmp_path)!r}), 'tree',\n"
            f"    ['sh', '-c', {tree!r}], healthy=lambda: True, timeout=30, what='the tree',\n"
            "    starting='starting', ready=lambda s: 'up', grace=2))\n")
    env = {**os.environ, devenv.MARKER_ENV: marker}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(tagged_processes(marker)) < 5 and time.monotonic() < deadline:  # python, 2 sh, 2 sleep
            time.sleep(0.2)
        assert len(tagged_processes(marker)) >= 5
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "stopped (no process left: True)" in out
        assert tagged_processes(marker) == []
    finally:
        for pid in tagged_processes(marker):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
