"""The model registry: the pyfunc model logged and registered, its aliases, tags and versions.

MLflow 3 conventions: ``log_model(name=...)``, registry aliases (``champion``, ``challenger``) instead
of stages, a signature on every logged model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_tasks.config import REPO_ROOT, Paths
from ml_tasks.contracts import CHALLENGER_ALIAS, CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from ml_tasks.errors import PipelineError
from ml_tasks.tracking.runs import configure

CHAMPION = CHAMPION_ALIAS
CHALLENGER = CHALLENGER_ALIAS
#: the version tag holding the sha256 of the logged model's files (checked before loading)
DIGEST_TAG = "model_sha256"


class RegistryError(PipelineError):
    """A registered version that must not be used (its files changed, or it has no digest)."""


def log_interest_model(model_dir: Path, signature_example: Any, metrics: Mapping[str, float] | None = None,
                       register_tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Log the whole scoring model (LSTM, PCA, predictor, vocabularies) as one pyfunc model and register
    it as a new version of ``user_interest_model``.

    Must be called inside an active run. ``signature_example``: a few users' events, the served model's
    input (its output for them completes the signature). The version is created with
    ``register_tags`` and ``model_sha256``, the digest of the logged files as the artifact store holds
    them, which :func:`load_fitted_model` checks before it unpickles anything. Returns
    ``{"model_uri", "version", "model_sha256"}``.
    """
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from ml_tasks.tracking.pyfunc import InterestModelPyfunc

    output_example = InterestModelPyfunc.from_dir(model_dir).predict(None, signature_example)
    signature = infer_signature(signature_example, output_example, params={"top_n": 20, "ranking": "overall"})
    info = mlflow.pyfunc.log_model(
        name="user_interest_model",
        python_model=InterestModelPyfunc(),
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(Path(__file__).resolve().parents[1])],
        signature=signature,
        input_example=signature_example.head(5),
        pip_requirements=_model_requirements(),
        metadata={"metrics": dict(metrics or {})},
    )
    with tempfile.TemporaryDirectory(prefix="iep-logged-") as tmp:
        digest = tree_sha256(Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=tmp)))
    version = mlflow.register_model(info.model_uri, REGISTERED_MODEL_NAME,
                                    tags={**(register_tags or {}), DIGEST_TAG: digest}).version
    return {"model_uri": info.model_uri, "version": int(version), "model_sha256": digest}


def tree_sha256(root: Path) -> str:
    """One sha256 over a folder: every file's relative path and content, in path order. MLflow's own
    ``registered_model_meta`` (name and version, written into a download by registry URI) is left out."""
    import hashlib

    total = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "registered_model_meta"):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        total.update(f"{path.relative_to(root).as_posix()}\0{digest.hexdigest()}\n".encode())
    return total.hexdigest()


def find_version(paths: Paths, tag: str, value: str) -> int | None:
    """The newest version of ``user_interest_model`` whose tag ``tag`` is ``value``, or ``None``."""
    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    found = client(paths).search_model_versions(f"name='{REGISTERED_MODEL_NAME}' and tags.`{tag}` = '{quoted}'")
    return max((int(mv.version) for mv in found), default=None)


def _model_requirements() -> list[str]:
    wanted = {"tensorflow-cpu", "keras", "scikit-learn", "pandas", "numpy", "pyarrow", "joblib", "mlflow"}
    pins = []
    lock = REPO_ROOT / "requirements.txt"
    if lock.exists():
        for line in lock.read_text().splitlines():
            name = line.split("==")[0].strip().lower().replace("_", "-")
            if name in wanted:
                pins.append(line.strip())
    return pins or sorted(wanted)


def client(paths: Paths) -> Any:
    from mlflow import MlflowClient

    configure(paths)
    return MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)


def alias_version(paths: Paths, alias: str = CHAMPION_ALIAS) -> int | None:
    """The model version an alias points at, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client(paths).get_model_version_by_alias(REGISTERED_MODEL_NAME, alias).version)
    except MlflowException:
        return None


def set_alias(paths: Paths, alias: str, version: int) -> None:
    client(paths).set_registered_model_alias(REGISTERED_MODEL_NAME, alias, str(version))


def set_version_tags(paths: Paths, version: int, tags: Mapping[str, Any]) -> None:
    c = client(paths)
    for key, value in tags.items():
        c.set_model_version_tag(REGISTERED_MODEL_NAME, str(version), key,
                                value if isinstance(value, str) else json.dumps(value))


def version_info(paths: Paths, version: int) -> dict[str, Any]:
    """Tags, source run and that run's metrics of a registered version."""
    c = client(paths)
    mv = c.get_model_version(REGISTERED_MODEL_NAME, str(version))
    metrics = c.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return {"version": int(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags),
            "aliases": list(getattr(mv, "aliases", []) or []), "metrics": dict(metrics),
            "source": mv.source, "created_ms": mv.creation_timestamp}


def model_uri(version: int | None = None, alias: str | None = CHAMPION_ALIAS) -> str:
    if version is not None:
        return f"models:/{REGISTERED_MODEL_NAME}/{version}"
    return f"models:/{REGISTERED_MODEL_NAME}@{alias}"


def load_fitted_model(paths: Paths, version: int) -> Any:
    """The ``ml_tasks.model.persist.FittedInterestModel`` inside a registered version (through pyfunc).

    The version's files are downloaded first and their digest compared with the one recorded at
    registration (:data:`DIGEST_TAG`); a version whose files changed since, or that has no digest, is
    refused with :class:`RegistryError` before anything in it is unpickled. The model then loads from
    that checked copy.
    """
    import tempfile

    import mlflow

    configure(paths)
    expected = client(paths).get_model_version(REGISTERED_MODEL_NAME, str(version)).tags.get(DIGEST_TAG)
    if not expected:
        raise RegistryError(f"model version {version} of {REGISTERED_MODEL_NAME} has no {DIGEST_TAG} tag; "
                            "only versions registered by the pipeline are loaded")
    with tempfile.TemporaryDirectory(prefix="iep-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(model_uri(version), dst_path=tmp))
        found = tree_sha256(local)
        if found != expected:
            raise RegistryError(f"model version {version} of {REGISTERED_MODEL_NAME}: its files changed after "
                                f"registration (sha256 {found[:12]}, recorded {expected[:12]}); refusing to load it")
        return mlflow.pyfunc.load_model(str(local)).unwrap_python_model().model


def latest_runs(paths: Paths, filter_string: str = "", max_results: int = 20) -> Any:
    import mlflow

    configure(paths)
    return mlflow.search_runs(filter_string=filter_string, max_results=max_results,
                              order_by=["start_time DESC"])


