"""The memory a DuckDB process of the project may take, and the part of it DuckDB's buffer pool gets.

``IEP_DUCKDB_MEMORY_LIMIT`` is a budget for each process that opens the warehouse (dbt's, the loader's,
the exporter's): a size such as ``12GB`` or ``800MiB``, or a share of the machine's memory such as
``80%`` (the default). DuckDB's own ``memory_limit`` bounds its buffer pool only; the process also holds
Python, dbt, Arrow buffers and DuckDB's allocations outside the pool (0.7 GiB of them at 50M events in
dbt's process). So DuckDB is given :data:`POOL_SHARE` of the budget and the rest is left for them: under
a ``12GB`` budget the pool is ``10200MB`` and a build larger than that spills to disk instead of pushing
the process past 12 GB.
"""

from __future__ import annotations

import os
import re

from ml_tasks.errors import PipelineError

BUDGET_ENV = "IEP_DUCKDB_MEMORY_LIMIT"
DEFAULT_BUDGET = "80%"
POOL_SHARE = 0.85
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_VALUE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)


def budget_bytes(budget: str) -> int | None:
    """The budget in bytes, or ``None`` for a share of the machine's memory (``'80%'``)."""
    number, unit = _parse(budget)
    return None if unit == "%" else int(number * _UNITS[unit])


def duckdb_memory_limit(budget: str | None = None) -> str:
    """DuckDB's ``memory_limit`` for a process whose budget is ``budget`` (default: the environment's
    ``IEP_DUCKDB_MEMORY_LIMIT``, else ``80%``): :data:`POOL_SHARE` of it, as ``'<n>MB'`` or ``'<p>%'``."""
    text = budget if budget is not None else (os.environ.get(BUDGET_ENV) or DEFAULT_BUDGET)
    number, unit = _parse(text)
    if unit == "%":
        return f"{round(number * POOL_SHARE, 1):g}%"
    return f"{max(int(number * _UNITS[unit] * POOL_SHARE) // 10**6, 1)}MB"


def _parse(text: str) -> tuple[float, str]:
    match = _VALUE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or (unit not in _UNITS and unit != "%") or float(match.group(1)) <= 0 or (
            unit == "%" and float(match.group(1)) > 100):
        raise PipelineError(f"{BUDGET_ENV}: expected a size such as 12GB or 800MiB, or a share of the machine's "
                            f"memory such as 80%; found '{text}'")
    return float(match.group(1)), unit
