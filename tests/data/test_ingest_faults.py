"""What goes wrong in real landing folders, each with its exact outcome: a systematic mistake, names that
DuckDB would glob, files changing under the loader, bad bytes and over-long lines, DuckDB failures, and
a file larger than the loader's memory."""

from __future__ import annotations

import errno
import gzip
import hashlib
from pathlib import Path

import duckdb
import pytest

from ml_tasks.data.ingest import IngestError, ingest_file, load, plan
from tests.data.test_ingest import GOOD, HEADER, assert_reconciles, events, rejects, rows, write


def nothing_loaded(warehouse: Path) -> None:
    for table in ("raw.events", "raw.rejected_events", "raw.loads"):
        assert rows(warehouse, f"select count(*) from {table}") == [(0,)]


# --- a systematic mistake fails loudly (point 7) ------------------------------------------------------------


def twenty_rows_ten_bad() -> str:
    good = [f"u{i},i{i},c1,view,{1511544070 + i}\n" for i in range(10)]
    bad = ([f"u{i},i{i},c1,click,1511544070\n" for i in range(5)] + [f",i{i},c1,view,1511544070\n" for i in range(3)]
           + ["u1,i1,c1,view,later\n", "u2,i2,c1,click,soon\n"])
    return HEADER + "".join(g + b for g, b in zip(good, bad, strict=True))


def test_a_file_with_half_its_rows_rejected_fails_as_a_whole(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    ingest_file(write(tmp_path / "before", HEADER + GOOD), "generic", warehouse)  # the warehouse exists
    path = write(tmp_path, twenty_rows_ten_bad())
    with pytest.raises(IngestError) as info:
        ingest_file(path, "generic", warehouse)
    assert str(info.value) == (
        f"{path}: expected at most 20% of the rows rejected, found 10 of 20 (50%), commonest reasons: unknown "
        "event_type (6 rows, first in line 3), missing user_id (3 rows, first in line 13), unparseable event_ts "
        "(2 rows, first in line 19); nothing was loaded (fix the data or its source definition, or raise "
        "max_reject_ratio to load the valid rows).")
    assert rows(warehouse, "select count(*) from raw.loads") == [(1,)]  # only the earlier load
    assert rows(warehouse, "select count(*) from raw.events") == [(1,)]
    assert rows(warehouse, "select count(*) from raw.rejected_events") == [(0,)]
    with pytest.raises(IngestError):  # not recorded as loaded: it fails again rather than being skipped
        ingest_file(path, "generic", warehouse, max_reject_ratio=0.49)
    summary = ingest_file(path, "generic", warehouse, max_reject_ratio=0.5)
    assert (summary["skipped"], summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == \
        (False, 20, 10, 10)
    assert_reconciles(summary, warehouse)


# --- loaded as hashed (point 6) -----------------------------------------------------------------------------


def test_a_name_with_glob_characters_loads_only_its_own_bytes(tmp_path):
    warehouse = tmp_path / "w[1]" / "wh.duckdb"  # the private copies then go to the system's temp folder
    write(tmp_path, HEADER + "other,i9,c9,buy,1511544070\n", "week1.csv")
    mine = write(tmp_path, HEADER + "mine,i1,c1,view,1511544070\nmine,i2,c2,view,1511544071\n", "week[1].csv")
    summary = ingest_file(mine, "generic", warehouse)
    assert (summary["rows_read"], summary["rows_loaded"]) == (2, 2)
    assert rows(warehouse, "select user_id, source_file from raw.events order by line_number") == [
        ("mine", str(mine)), ("mine", str(mine))]
    assert summary["sha256"] == hashlib.sha256(mine.read_bytes()).hexdigest()
    star = write(tmp_path, HEADER + "star,i1,c1,fav,1511544070\n", "*.csv")
    assert ingest_file(star, "generic", warehouse)["rows_loaded"] == 1
    assert rows(warehouse, "select count(*) from raw.events where user_id = 'star'") == [(1,)]


def test_a_file_rewritten_during_its_load_goes_in_as_it_was_hashed(tmp_path, monkeypatch):
    warehouse = tmp_path / "wh.duckdb"
    old = HEADER + "old,i1,c1,view,1511544070\n"
    path = write(tmp_path, old)
    new = HEADER + "new,i1,c1,view,1511544070\nnew,i2,c2,buy,1511544071\n"
    monkeypatch.setitem(load._HOOKS, "before_insert", lambda: path.write_text(new))
    summary = ingest_file(path, "generic", warehouse)
    monkeypatch.delitem(load._HOOKS, "before_insert")
    assert summary["sha256"] == hashlib.sha256(old.encode()).hexdigest()
    assert [e[0] for e in events(warehouse)] == ["old"]
    assert rows(warehouse, "select size_bytes from raw.loads") == [(len(old),)]
    again = ingest_file(path, "generic", warehouse)  # the new content is a load of its own
    assert (again["skipped"], again["rows_loaded"], again["sha256"]) == \
        (False, 2, hashlib.sha256(new.encode()).hexdigest())


def test_a_file_changing_while_it_is_read_is_refused(tmp_path, monkeypatch):
    warehouse = tmp_path / "wh.duckdb"
    path = write(tmp_path, HEADER + GOOD)
    real = plan.copy_text

    def copy_then_append(*args, **kwargs):
        copied = real(*args, **kwargs)
        with open(path, "a") as fh:
            fh.write("u2,i2,c2,buy,1511544071\n")
        return copied

    monkeypatch.setattr(plan, "copy_text", copy_then_append)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "generic", warehouse)
    assert str(info.value) == (f"{path}: expected a file at rest, found it changing while it was read (a writer is "
                               "still at work); nothing was loaded, retry when it is done.")
    assert not warehouse.exists()


# --- bad bytes and over-long lines are quarantined (point 8) ---------------------------------------------------


def test_one_bad_byte_quarantines_only_its_line(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    good = "".join(f"u{i},i{i},c1,view,{1511544070 + i}\r\n" for i in range(8))
    data = (HEADER.replace("\n", "\r\n") + good).encode() + b"caf\xe9,i9,c9,buy,1511544070\r\n" + b"u10,i10,c1,fav,1511544080"
    path = write(tmp_path, data)
    summary = ingest_file(path, "generic", warehouse)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"], summary["blank_lines"]) == \
        (10, 9, 1, 0)
    assert rejects(warehouse) == [(10, "caf\\xe9,i9,c9,buy,1511544070", "not UTF-8")]
    assert [e[5] for e in events(warehouse)] == [2, 3, 4, 5, 6, 7, 8, 9, 11]
    assert_reconciles(summary, warehouse)
    gz = write(tmp_path, gzip.compress(data), "events.csv.gz")  # the same inside gzip
    assert ingest_file(gz, "generic", tmp_path / "gz.duckdb")["rows_rejected"] == 1
    assert rejects(tmp_path / "gz.duckdb") == rejects(warehouse)


def test_a_line_longer_than_the_limit_is_quarantined(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    long_line = "u1,i1," + "c" * 3_000_000 + ",view,1511544070"  # longer than DuckDB's own 2 MB line limit
    text = HEADER + "".join(f"u{i},i{i},c1,view,{1511544070 + i}\n" for i in range(6)) + long_line + "\n" + GOOD
    path = write(tmp_path, text)
    summary = ingest_file(path, "generic", warehouse)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (8, 7, 1)
    [(line, raw, reason)] = rejects(warehouse)
    assert (line, reason) == (8, "line longer than 1048576 bytes")
    assert raw == long_line[:1000] + "..."
    assert [e[5] for e in events(warehouse)] == [2, 3, 4, 5, 6, 7, 9]
    last = write(tmp_path, HEADER + GOOD * 4 + long_line, "last.csv")  # the last line, without a line ending
    assert ingest_file(last, "generic", tmp_path / "last.duckdb")["rows_rejected"] == 1
    assert rejects(tmp_path / "last.duckdb")[0][0] == 6


# --- DuckDB failures are one sentence, never the data (point 8) ------------------------------------------------


@pytest.mark.parametrize(("error", "what"), [
    (duckdb.IOException('IO Error: Could not write file "/spill/duckdb_temp_block-4.block": No space left on device'
                        "\nOriginal Line: secret,row"), "the disk is full (DuckDB could not write the warehouse or "
                                                        "its spill files in {spill})"),
    (duckdb.ConversionException("Conversion Error: Could not convert string 'secret' to INT32 when casting from "
                                "source column c5\nCSV Error on Line: 7\nOriginal Line: secret,row"),
     "Conversion Error: Could not convert string '...' to INT32 when casting from source column c5 "
     "(ConversionException)"),
])
def test_a_duckdb_failure_is_one_sentence_naming_the_file_and_line(tmp_path, monkeypatch, error, what):
    warehouse = tmp_path / "wh.duckdb"
    path = write(tmp_path, HEADER + GOOD)

    def fail() -> None:
        raise error

    monkeypatch.setitem(load._HOOKS, "after_events", fail)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "generic", warehouse)
    text = str(info.value)
    spill = text.split(" spill files in ")[-1].split(")")[0] if "spill files" in text else ""
    where = " in line 7" if "Line: 7" in str(error) else ""
    assert text == f"{path}: the load failed{where}: {what.format(spill=spill)}; nothing was loaded."
    assert "secret" not in text and "\n" not in text
    nothing_loaded(warehouse)


def test_the_disk_filling_up_during_the_copy_is_one_sentence(tmp_path, monkeypatch):
    path = write(tmp_path, HEADER + GOOD)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plan, "copy_text", full)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "generic", tmp_path / "wh.duckdb")
    assert str(info.value) == (f"{path}: the load failed: the disk is full (no room for the loader's private copy "
                               "beside the warehouse); nothing was loaded.")


def test_a_file_larger_than_the_memory_limit_loads(tmp_path):
    """24 MB of CSV through a DuckDB allowed 16 MB (it spills to the loader's temp folder); with 8 MB it
    fails, as one sentence, and nothing is loaded."""
    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write(HEADER)
        for start in range(0, 500_000, 10_000):
            fh.write("".join(f"user{j:08d},item{j * 7919 % 1000003:08d},cat{j % 997:04d},view,{1511544070 + j}\n"
                             for j in range(start, start + 10_000)))
    assert path.stat().st_size > 23 << 20
    summary = ingest_file(path, "generic", tmp_path / "wh.duckdb", memory_limit="16MB", threads=1)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_duplicate"]) == (500_000, 500_000, 0)
    with pytest.raises(IngestError) as info:
        ingest_file(path, "generic", tmp_path / "small.duckdb", memory_limit="8MB", threads=1)
    assert str(info.value) == (f"{path}: the load failed: DuckDB ran out of memory (memory_limit 8MB; set "
                               "IEP_INGEST_MEMORY_LIMIT higher); nothing was loaded.")
    nothing_loaded(tmp_path / "small.duckdb")
    assert not list(tmp_path.glob("*.ingest"))  # the private copies and spill files are gone


def test_the_loader_memory_limit_comes_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    from ml_tasks.data.ingest.rules import Resources

    monkeypatch.delenv("IEP_INGEST_MEMORY_LIMIT", raising=False)
    monkeypatch.setenv("IEP_DUCKDB_MEMORY_LIMIT", "3GB")  # the project-wide process budget: DuckDB gets 85 %
    monkeypatch.setenv("IEP_INGEST_THREADS", "3")
    assert Resources.resolve(tmp_path) == Resources("2550MB", 3, tmp_path)
    monkeypatch.setenv("IEP_INGEST_MEMORY_LIMIT", "2GB")
    assert Resources.resolve(tmp_path).memory_limit == "2GB"
    assert Resources.resolve(tmp_path, memory_limit="1GB", threads=1) == Resources("1GB", 1, tmp_path)
