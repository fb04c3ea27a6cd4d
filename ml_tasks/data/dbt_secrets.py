"""A dbt-duckdb plugin that hands dbt's DuckDB connections the pseudonymisation secret as a variable.

The secret (``IEP_PSEUDONYMISE_SECRET``) is bound as a parameter of ``SET VARIABLE`` when dbt opens a
connection, and the staging models read it with ``getvariable('iep_pseudonymise_secret')``: it never
appears in model SQL, so it stays out of ``target/manifest.json``, ``run_results.json``, ``compiled/``
and the dbt docs, and Airflow masks it in task fields by its name (it contains ``SECRET``). Loaded by
``dbt_project/profiles.yml`` (``plugins: [{module: ml_tasks.data.dbt_secrets}]``).
"""

from __future__ import annotations

import os
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

SECRET_ENV = "IEP_PSEUDONYMISE_SECRET"
VARIABLE = "iep_pseudonymise_secret"


class Plugin(BasePlugin):
    def configure_connection(self, conn: Any) -> None:
        _bind(conn)

    def configure_cursor(self, cursor: Any) -> None:  # each cursor is a connection of its own in DuckDB
        _bind(cursor)


def _bind(conn: Any) -> None:
    secret = os.environ.get(SECRET_ENV)
    if secret:
        conn.execute(f"set variable {VARIABLE} = ?", [secret])
