"""Shared test setup.

Airflow reads its configuration when first imported, so its home, DAG folder and metadata DB are
pointed at a throw-away folder here, before any test imports it. Every test that runs the pipeline
gets its own data folder and MLflow store through ``pipeline_paths``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="iep-test-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
os.environ["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Airflow puts the DAG folder on sys.path when it parses DAGs; so do the tests (shared DAG wiring)
sys.path.insert(0, str(REPO / "dags"))


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata DB (SQLite in the tests' AIRFLOW_HOME) and the pools the DAGs use."""
    from ml_tasks.contracts import POOLS

    airflow = [sys.executable, "-m", "airflow"]
    pools = [["pools", "set", name, str(slots), text] for name, (slots, text) in POOLS.items()]
    for cmd in (["db", "migrate"], *pools):
        out = subprocess.run(airflow + cmd, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture
def pipeline_paths(tmp_path, monkeypatch):
    """``Paths`` of a fresh, empty pipeline workspace (warehouse, exports, MLflow store) in tmp_path."""
    from ml_tasks.config import Paths

    data = tmp_path / "data"
    monkeypatch.setenv("IEP_DATA_DIR", str(data))
    for name in ("IEP_WAREHOUSE", "IEP_EXPORT_DIR", "IEP_ARTIFACT_DIR", "IEP_LANDING_DIR",
                 "IEP_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    return Paths.from_env()


@pytest.fixture(scope="session")
def samples() -> Path:
    """The real data sets shipped in ``data/samples`` (Taobao sample, MovieLens latest-small)."""
    return SAMPLES
