"""The process memory budget (IEP_DUCKDB_MEMORY_LIMIT) and the share of it DuckDB's buffer pool gets."""

from __future__ import annotations

import duckdb
import pytest

from ml_tasks.data.memory import POOL_SHARE, budget_bytes, duckdb_memory_limit
from ml_tasks.errors import PipelineError


@pytest.mark.parametrize(("budget", "pool"), [
    ("12GB", "10200MB"), ("12 gb", "10200MB"), ("1GiB", "912MB"), ("800MB", "680MB"), ("0.5TB", "425000MB"),
    ("80%", "68%"), ("50%", "42.5%"), ("1KB", "1MB"),
])
def test_duckdb_gets_its_share_of_the_budget(budget, pool):
    assert duckdb_memory_limit(budget) == pool


def test_the_budget_comes_from_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv("IEP_DUCKDB_MEMORY_LIMIT", raising=False)
    assert duckdb_memory_limit() == f"{80 * POOL_SHARE:g}%"
    monkeypatch.setenv("IEP_DUCKDB_MEMORY_LIMIT", "2GB")
    assert duckdb_memory_limit() == "1700MB"
    assert budget_bytes("2GB") == 2 * 10**9 and budget_bytes("2GiB") == 2 * 2**30 and budget_bytes("80%") is None


@pytest.mark.parametrize("budget", ["lots", "12XB", "-1GB", "0GB", "120%", "", "12 GB extra"])
def test_a_bad_budget_is_one_sentence(budget):
    with pytest.raises(PipelineError) as info:
        duckdb_memory_limit(budget)
    assert str(info.value) == ("IEP_DUCKDB_MEMORY_LIMIT: expected a size such as 12GB or 800MiB, or a share of "
                               f"the machine's memory such as 80%; found '{budget}'")


def test_duckdb_accepts_every_limit_it_is_given():
    con = duckdb.connect()
    try:
        for budget in ("12GB", "1GiB", "80%", "50%"):
            con.execute("set memory_limit = ?", [duckdb_memory_limit(budget)])
            assert con.execute("select current_setting('memory_limit')").fetchone()[0]
    finally:
        con.close()


def test_warehouse_connections_take_the_share_of_the_budget(tmp_path, monkeypatch):
    from ml_tasks.data import warehouse

    monkeypatch.setenv("IEP_DUCKDB_MEMORY_LIMIT", "2GB")
    with warehouse.connection(tmp_path / "wh.duckdb", read_only=False) as con:
        got = con.execute("select current_setting('memory_limit')").fetchone()[0]
        con.execute("set memory_limit = '1700MB'")
        assert got == con.execute("select current_setting('memory_limit')").fetchone()[0]
