"""Fault injection for ``tests/stack``: a crash between registering a model version and moving an alias.

Only the test stack puts this folder on ``PYTHONPATH`` (with ``IEP_STACK_FAULTS`` naming a folder); Python
imports ``sitecustomize`` at start-up, so the Celery workers carry the hook into every task process they
fork. It does nothing until ``ml_tasks.tracking`` is imported, and then only wraps ``set_version_tags``,
which ``register_model`` calls once the version is registered and recorded in the run state and before it
moves any alias (whether the gate promotes, rejects or refuses): when
``<IEP_STACK_FAULTS>/crash_before_alias.json`` names the running task's DAG run (``AIRFLOW_CTX_*``, set
by Airflow in the task process), the first such call renames the file to ``crashed_before_alias.json``
(so exactly one process crashes), records the version, and kills its own process with SIGKILL: the
version is registered, its gate tags and aliases not written, as after a power cut.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

FAULTS = os.environ.get("IEP_STACK_FAULTS")
TARGET = "ml_tasks.tracking"


def _wrap(module) -> None:
    original = module.set_version_tags

    def set_version_tags(paths, version, tags):
        armed = Path(FAULTS) / "crash_before_alias.json"
        done = Path(FAULTS) / "crashed_before_alias.json"
        try:
            wanted = json.loads(armed.read_text())
        except (OSError, ValueError):
            return original(paths, version, tags)
        here = (os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"))
        if here != (wanted.get("dag_id"), wanted.get("run_id")):
            return original(paths, version, tags)
        try:
            os.rename(armed, done)  # one process wins
        except OSError:
            return original(paths, version, tags)
        done.write_text(json.dumps({**wanted, "tags": sorted(tags), "version": int(version), "pid": os.getpid(),
                                    "try_number": os.environ.get("AIRFLOW_CTX_TRY_NUMBER"),
                                    "at": time.time()}))
        os.kill(os.getpid(), signal.SIGKILL)

    module.set_version_tags = set_version_tags


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps ``ml_tasks.tracking`` once it has been executed (lazily: nothing is imported up front)."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _wrap(module)

        loader.exec_module = exec_and_wrap
        return spec


if FAULTS:
    sys.meta_path.insert(0, _Finder())
