"""A dbt-duckdb plugin that sets up each DuckDB connection dbt opens: its memory limit and the
pseudonymisation secret.

- **Memory**: DuckDB's ``memory_limit`` is the share of the process budget ``IEP_DUCKDB_MEMORY_LIMIT``
  that its buffer pool may take (:func:`ml_tasks.data.memory.duckdb_memory_limit`), the same rule as the
  loader's and the exporter's connections, so dbt's process as a whole stays within the budget.
- **Secret**: ``IEP_PSEUDONYMISE_SECRET`` (when set) is bound as a parameter of ``SET VARIABLE`` and the
  staging models read it with ``getvariable('iep_pseudonymise_secret')``: it never appears in model SQL,
  so it stays out of ``target/manifest.json``, ``run_results.json``, ``compiled/`` and the dbt docs, and
  Airflow masks it in task fields by its name (it contains ``SECRET``).

Loaded by ``dbt_project/profiles.yml`` (``plugins: [{module: ml_tasks.data.dbt_connection}]``).
"""

from __future__ import annotations

import os
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from ml_tasks.data.memory import duckdb_memory_limit

SECRET_ENV = "IEP_PSEUDONYMISE_SECRET"
VARIABLE = "iep_pseudonymise_secret"


class Plugin(BasePlugin):
    def configure_connection(self, conn: Any) -> None:
        conn.execute("set memory_limit = ?", [duckdb_memory_limit()])
        _bind(conn)

    def configure_cursor(self, cursor: Any) -> None:  # each cursor is a connection of its own in DuckDB
        _bind(cursor)


def _bind(conn: Any) -> None:
    secret = os.environ.get(SECRET_ENV)
    if secret:
        conn.execute(f"set variable {VARIABLE} = ?", [secret])
