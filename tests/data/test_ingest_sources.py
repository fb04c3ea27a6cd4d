"""Declared sources, timestamps and containers, each with its exact outcome.

Two public layouts are written as small fixtures (``tests/data/fixtures``): a REES46-style log (times
like ``2019-10-01 00:00:00 UTC``, types view/cart/purchase/remove_from_cart) and a RetailRocket-style
log (epoch milliseconds, types view/addtocart/transaction, categories in an item table).
"""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ml_tasks.data.ingest import IngestError, ingest_dir, ingest_file, load_source
from tests.data.test_ingest import HEADER, assert_reconciles, events, rejects, rows, write

FIXTURES = Path(__file__).parent / "fixtures"
REES46 = FIXTURES / "rees46"
RETAILROCKET = FIXTURES / "retailrocket"


def epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# --- the two public layouts ---------------------------------------------------------------------------------


def test_rees46_style_source(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    summary = ingest_file(REES46 / "events.csv", REES46 / "rees46.yml", warehouse)
    # 12 rows: 8 loaded; 2 remove_from_cart left out on purpose (do not count towards the 20 %), 2 bad
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (12, 8, 4)
    assert summary["format"] == str((REES46 / "rees46.yml").resolve())
    assert_reconciles(summary, warehouse)
    assert [(line, reason) for line, _, reason in rejects(warehouse)] == [
        (6, "event_type 'remove_from_cart' left out (null in event_types)"),
        (9, "event_type 'remove_from_cart' left out (null in event_types)"),
        (11, "unparseable event_ts '2019-10-02 25:00:10 UTC'"),
        (12, "missing user_id"),
    ]
    loaded = events(warehouse)
    assert [(e[0], e[1], e[2], e[3], e[5]) for e in loaded[:2]] == [
        ("541312140", "44600062", "2103807459595387724", "view", 2),
        ("554748717", "3900821", "2053013552326770905", "view", 3),
    ]
    assert [e[3] for e in loaded] == ["view", "view", "cart", "view", "buy", "view", "view", "buy"]
    assert loaded[0][4] == epoch(2019, 10, 1) and loaded[-1][4] == epoch(2019, 10, 2, 0, 0, 11)
    assert rows(warehouse, "select event_ts::date, count(*) from raw.events group by 1 order by 1") == [
        (datetime(2019, 10, 1).date(), 6), (datetime(2019, 10, 2).date(), 2)]


def test_retailrocket_style_source_with_an_item_table(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    summary = ingest_file(RETAILROCKET / "events.csv", RETAILROCKET / "_source.yml", warehouse)
    # 10 rows, 2 rejected: exactly 20 % is still accepted
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (10, 8, 2)
    assert_reconciles(summary, warehouse)
    assert [(line, reason) for line, _, reason in rejects(warehouse)] == [
        (9, "itemid not found in items.csv"),
        (11, "unknown event_type 'addtowishlist'"),
    ]
    loaded = events(warehouse)
    assert loaded[0] == ("257597", "355908", "1173", "view", 1433221332.117, 2)  # epoch ms, millisecond kept
    # the item table's first row of an item wins (22556 is listed twice); addtocart -> cart, transaction -> buy
    assert [(e[1], e[2], e[3]) for e in loaded if e[1] in ("22556", "5411")] == [
        ("22556", "1088", "cart"), ("5411", "1325", "buy")]
    assert rows(warehouse, "select min(event_ts), max(event_ts) from raw.events") == [
        (datetime(2015, 6, 2, 4, 48, 20), datetime(2015, 6, 2, 5, 50, 14, 164000))]
    # the item table is part of the content: a changed table is a new load of the same events file
    moved = tmp_path / "rr"
    shutil.copytree(RETAILROCKET, moved)
    assert ingest_file(moved / "events.csv", moved / "_source.yml", warehouse)["skipped"] is True
    with open(moved / "items.csv", "a") as fh:
        fh.write("334662,77\n")
    again = ingest_file(moved / "events.csv", moved / "_source.yml", warehouse)
    assert (again["skipped"], again["rows_loaded"], again["rows_rejected"]) == (False, 9, 1)


# --- mistakes in a source definition: one sentence, before anything is written ---------------------------

GOOD_YML = """columns: {user_id: visitor, item_id: item, category_id: cat, event_type: what, event_ts: when}
"""

YML_CASES = [
    ("unknown key", GOOD_YML + "delimeter: ';'\n",
     "{yml}: unknown key 'delimeter' (the keys are columns, category_from, timestamp, event_types, header, delimiter)."),
    ("a canonical column missing", "columns: {user_id: visitor, item_id: item, event_type: what, event_ts: when}\n",
     "{yml}: columns: the canonical column category_id is missing (map it to a column of the file or give "
     "category_from)."),
    ("an unknown canonical column", "columns: {user: visitor}\n",
     "{yml}: columns: unknown canonical column 'user' (they are user_id, item_id, category_id, event_type, event_ts)."),
    ("a target outside the vocabulary", GOOD_YML + "event_types: {view: view, basket: cart, order: purchase}\n",
     "{yml}: event_types: 'order' maps to str 'purchase', which is not an event type (expected one of view, search, "
     "fav, cart, buy, review, or null to leave it out)."),
    ("an unknown timestamp unit", GOOD_YML + "timestamp: {unit: minutes}\n",
     "{yml}: timestamp: expected unit to be one of auto, s, ms, us, ns, iso, found str 'minutes'."),
    ("a lookup file that is not there", GOOD_YML + "category_from: {file: nope.csv, key: item, value: cat}\n",
     "{yml}: category_from: expected the file nope.csv (relative to this file), found nothing at {dir}/nope.csv."),
    ("positions without a header", "header: false\n" + GOOD_YML,
     "{yml}: columns: with header: false, expected user_id to be a field position (1, 2, ...), found str 'visitor'."),
    ("not YAML", "columns: [a\n",
     "{yml}: expected a YAML source definition, found text YAML cannot read in line 2 "
     "(expected ',' or ']', but got '<stream end>')."),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in YML_CASES], ids=[c[0] for c in YML_CASES])
def test_source_definition_mistakes_are_one_sentence(tmp_path, text, message):
    yml = write(tmp_path, text, "source.yml")
    data = write(tmp_path, "visitor,item,cat,what,when\nv1,i1,c1,view,1511544070\n", "events.csv")
    warehouse = tmp_path / "wh.duckdb"
    with pytest.raises(IngestError) as info:
        ingest_file(data, yml, warehouse)
    assert str(info.value) == message.format(yml=yml, dir=tmp_path)
    assert not warehouse.exists()


def test_a_column_absent_from_the_data_is_named(tmp_path):
    yml = write(tmp_path, GOOD_YML, "source.yml")
    data = write(tmp_path, "visitor,item,category,what,when\nv1,i1,c1,view,1511544070\n", "events.csv")
    with pytest.raises(IngestError) as info:
        ingest_file(data, yml, tmp_path / "wh.duckdb")
    assert str(info.value) == (f"{data}: expected the column 'cat' (columns.category_id in source.yml) once in the "
                               "header, found it not in the header visitor,item,category,what,when.")
    parquet = tmp_path / "events.parquet"
    pd.DataFrame({"visitor": ["v"], "item": ["i"], "what": ["view"], "when": [1511544070]}).to_parquet(parquet)
    with pytest.raises(IngestError) as info:
        ingest_file(parquet, yml, tmp_path / "wh.duckdb")
    assert str(info.value) == (f"{parquet}: expected the column 'cat' (columns.category_id in source.yml), "
                               "found the columns visitor,item,what,when.")
    assert not (tmp_path / "wh.duckdb").exists()


def test_headerless_semicolon_source_with_positions(tmp_path):
    yml = write(tmp_path, "header: false\ndelimiter: ';'\ncolumns: {event_ts: 1, user_id: 2, item_id: 3, "
                          "category_id: 4, event_type: 5}\nevent_types: {1: view, 2: buy}\n", "source.yml")
    data = write(tmp_path, "1511544070;u1;i1;c1;1\n1511544071;u2;i2;c2;2\n1511544072;u3;i3;c3;9\n"
                           "1511544073;u4;i4;c4;1\n1511544074;u5;i5;c5;1\n", "events.txt")
    warehouse = tmp_path / "wh.duckdb"
    summary = ingest_file(data, yml, warehouse)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (5, 4, 1)
    assert [(e[0], e[3], e[5]) for e in events(warehouse)] == [("u1", "view", 1), ("u2", "buy", 2),
                                                              ("u4", "view", 4), ("u5", "view", 5)]
    assert [(line, reason) for line, _, reason in rejects(warehouse)] == [(3, "unknown event_type '9'")]


def test_the_predefined_formats_are_sources():
    from ml_tasks.data.ingest import PREDEFINED

    assert PREDEFINED["generic"].timestamp_unit == PREDEFINED["taobao"].timestamp_unit == "auto"
    assert PREDEFINED["taobao"].event_types == {"pv": "view", "fav": "fav", "cart": "cart", "buy": "buy"}
    assert PREDEFINED["movielens"].constant_event_type == "review"
    assert load_source(RETAILROCKET / "_source.yml").category_from.path == (RETAILROCKET / "items.csv").resolve()


# --- timestamps -------------------------------------------------------------------------------------------


def test_epoch_units_are_told_apart_by_magnitude_in_csv(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    text = HEADER + "".join(f"u{i},i{i},c1,view,{ts}\n" for i, ts in enumerate([
        "1511544070", "1511544070123", "1511544070123456", "1511544070123456789", "1511544070.5",
        "2017-11-25T04:00:00+08:00", "2017-11-24 20:00:00 UTC"]))
    summary = ingest_file(write(tmp_path, text), "generic", warehouse)
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (7, 0)
    assert rows(warehouse, "select epoch_us(event_ts) from raw.events order by line_number") == [
        (1511544070000000,), (1511544070123000,), (1511544070123456,), (1511544070123456,), (1511544070500000,),
        (1511553600000000,), (1511553600000000,)]


def test_a_declared_unit_wins_over_magnitude(tmp_path):
    data = write(tmp_path, "user,item,cat,type,ts\nu1,i1,c1,view,1511544070123\nu2,i2,c2,view,1511544070\n"
                           "u3,i3,c3,view,2017-11-24\n" + "u4,i4,c4,view,1511544070999\n" * 7, "events.csv")
    columns = "columns: {user_id: user, item_id: item, category_id: cat, event_type: type, event_ts: ts}\n"
    outcomes = {}
    for unit in ("ms", "s", "iso"):
        yml = write(tmp_path, columns + f"timestamp: {{unit: {unit}}}\n", f"{unit}.yml")
        warehouse = tmp_path / f"{unit}.duckdb"
        ingest_file(data, yml, warehouse, max_reject_ratio=1.0)
        outcomes[unit] = [(line, reason) for line, _, reason in rejects(warehouse)][:3]
    assert outcomes["ms"] == [(3, "event_ts before 1995-01-01"), (4, "unparseable event_ts '2017-11-24'")]
    assert outcomes["s"][:2] == [(2, "event_ts more than 1 day after load time"),
                                 (4, "unparseable event_ts '2017-11-24'")]
    assert outcomes["iso"][:2] == [(2, "unparseable event_ts '1511544070123'"),
                                   (3, "unparseable event_ts '1511544070'")]


def test_milliseconds_and_microseconds_in_parquet(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    frames = {
        "ms_int.parquet": [1767225600123, 1767225601000],  # int64 epoch ms
        "us_int.parquet": [1767225600123456, 1767225601000000],  # int64 epoch us
        "us_ts.parquet": pd.to_datetime(["2026-01-01 00:00:00.123456", "2026-01-01 00:00:01"], format="ISO8601"
                                        ).astype("datetime64[us]"),
        "ms_tz.parquet": pd.to_datetime(["2026-01-01 01:00:00.123+01:00", "2026-01-01 00:00:01Z"], utc=True,
                                        format="ISO8601").astype("datetime64[ms, UTC]"),
        "float_s.parquet": [1767225600.123456, 1767225601.0],  # double epoch seconds
    }
    loaded = {}
    for name, ts in frames.items():
        path = tmp_path / name
        pd.DataFrame({"user_id": [1.0, 2.0], "item_id": [10, 11], "category_id": [7.0, 7.5],
                      "event_type": ["view", "buy"], "event_ts": ts}).to_parquet(path, index=False)
        summary = ingest_file(path, "generic", warehouse)
        assert (summary["rows_loaded"], summary["rows_rejected"]) == (2, 0)
        loaded[name] = rows(warehouse, f"select user_id, item_id, category_id, epoch_us(event_ts) from raw.events "
                                       f"where load_id = {summary['load_id']} order by line_number")
    ms = 1767225600123000
    assert loaded["ms_int.parquet"] == loaded["ms_tz.parquet"] == [("1", "10", "7", ms), ("2", "11", "7.5", ms + 877000)]
    us = [("1", "10", "7", ms + 456), ("2", "11", "7.5", ms + 877000)]
    assert loaded["us_int.parquet"] == loaded["us_ts.parquet"] == loaded["float_s.parquet"] == us


def test_a_strptime_format(tmp_path):
    yml = write(tmp_path, "columns: {user_id: u, item_id: i, category_id: c, event_type: t, event_ts: ts}\n"
                          "timestamp: {format: '%d/%m/%Y %H:%M'}\n", "source.yml")
    data = write(tmp_path, "u,i,c,t,ts\nu1,i1,c1,view,24/11/2017 20:00\nu2,i2,c2,view,2017-11-24 20:00\n"
                           + "u3,i3,c3,buy,01/12/2017 08:30\n" * 3, "events.csv")
    warehouse = tmp_path / "wh.duckdb"
    summary = ingest_file(data, yml, warehouse)
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (4, 1)
    assert rejects(warehouse)[0][2] == "unparseable event_ts '2017-11-24 20:00'"
    assert events(warehouse)[0][4] == epoch(2017, 11, 24, 20)


# --- containers -------------------------------------------------------------------------------------------


def test_gzip_and_zstd_csv_are_read_directly(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    gz = write(tmp_path, gzip.compress((HEADER + "u1,i1,c1,view,1511544070000\n\nu2,i2,c2,buy,x\n"
                                        + "u3,i3,c3,buy,1511544071\n" * 3).encode()), "events.csv.gz")
    summary = ingest_file(gz, "generic", warehouse)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"], summary["blank_lines"]) == \
        (5, 4, 1, 1)
    assert [(line, raw, reason) for line, raw, reason in rejects(warehouse)] == [
        (4, "u2,i2,c2,buy,x", "unparseable event_ts 'x'")]
    assert summary["sha256"] == __import__("hashlib").sha256(gz.read_bytes()).hexdigest()  # of the bytes as stored
    zst = tmp_path / "events.csv.zst"
    con = duckdb.connect()
    con.execute("copy (select 'u9' as user_id, 'i9' as item_id, 'c9' as category_id, 'fav' as event_type, "
                "1511544070123456 as event_ts) to '" + str(zst) + "' (header, compression zstd)")
    con.close()
    summary = ingest_file(zst, "generic", warehouse)
    assert summary["rows_loaded"] == 1
    assert rows(warehouse, "select user_id, epoch_us(event_ts) from raw.events where load_id = 2") == [
        ("u9", 1511544070123456)]


def _hive_folder(root: Path) -> Path:
    folder = root / "events_pq"
    for day, users in (("2026-01-01", [1.0, 2.0]), ("2026-01-02", [3.0, None])):
        part = folder / f"dt={day}"
        part.mkdir(parents=True)
        base = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
        pd.DataFrame({"user_id": users, "item_id": [10, 11], "category_id": ["c1", "c2"],
                      "event_type": ["view", "buy"], "event_ts": [base + 500, base + 1500]},
                     ).to_parquet(part / "part-0.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    return folder


def test_a_hive_partitioned_parquet_folder_is_one_load(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    folder = _hive_folder(tmp_path)
    summary = ingest_file(folder, "generic", warehouse, max_reject_ratio=0.25)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == (4, 3, 1)
    assert summary["file"] == str(folder)
    assert summary["files_ignored"] == [{"file": str(folder / "_SUCCESS"), "reason": "not a Parquet file of the folder"}]
    assert_reconciles(summary, warehouse)
    day1, day2 = folder / "dt=2026-01-01" / "part-0.parquet", folder / "dt=2026-01-02" / "part-0.parquet"
    assert rows(warehouse, "select user_id, event_ts::date, source_file, line_number from raw.events "
                           "order by event_ts") == [
        ("1", datetime(2026, 1, 1).date(), str(day1), 1), ("2", datetime(2026, 1, 1).date(), str(day1), 2),
        ("3", datetime(2026, 1, 2).date(), str(day2), 1)]
    assert [(r[0], r[3]) for r in rows(warehouse, "select source_file, line_number, raw_line, reason "
                                                  "from raw.rejected_events")] == [(str(day2), "missing user_id")]
    assert json.loads(rows(warehouse, "select raw_line from raw.rejected_events")[0][0])["dt"] == "2026-01-02"
    assert rows(warehouse, "select source_file, size_bytes, mtime_ns from raw.loads") == [
        (str(folder), day1.stat().st_size + day2.stat().st_size, None)]
    assert ingest_file(folder, "generic", warehouse, max_reject_ratio=0.25)["skipped"] is True


def test_a_partition_column_can_be_mapped(tmp_path):
    folder = tmp_path / "by_category"
    for cat in ("shoes", "bags"):
        (folder / f"cat={cat}").mkdir(parents=True)
        pd.DataFrame({"u": ["u1"], "i": [f"{cat}-1"], "t": ["view"], "ts": [1767225600]}).to_parquet(
            folder / f"cat={cat}" / "p.parquet", index=False)
    yml = write(tmp_path, "columns: {user_id: u, item_id: i, category_id: cat, event_type: t, event_ts: ts}\n",
                "source.yml")
    warehouse = tmp_path / "wh.duckdb"
    assert ingest_file(folder, yml, warehouse)["rows_loaded"] == 2
    assert rows(warehouse, "select item_id, category_id from raw.events order by 1") == [
        ("bags-1", "bags"), ("shoes-1", "shoes")]


# --- a landing folder with sources per sub-folder ---------------------------------------------------------


def test_landing_sub_folders_with_their_own_sources(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    landing = tmp_path / "landing"
    write(landing, HEADER + "u1,i1,c1,view,1511544070\n", "a.csv")
    write(landing, gzip.compress((HEADER + "u2,i2,c2,buy,1511544070123\n").encode()), "b.csv.gz")
    write(landing, "{}", "notes.json")
    write(landing, HEADER, ".c.csv.part")
    shutil.copytree(RETAILROCKET, landing / "retailrocket")
    shutil.copy(REES46 / "events.csv", write(landing / "rees46", "", "events.csv"))
    shutil.copy(REES46 / "rees46.yml", landing / "rees46" / "_source.yml")
    hive = _hive_folder(landing)
    write(landing / "broken", "colums: {}\n", "_source.yml")
    write(landing / "broken", "x,y\n1,2\n", "x.csv")
    summary = ingest_dir(landing, warehouse, max_reject_ratio=0.5)
    loaded = sorted(Path(f["file"]).relative_to(landing).as_posix() for f in summary["files"])
    assert loaded == ["a.csv", "b.csv.gz", "events_pq/dt=2026-01-01/part-0.parquet",
                      "events_pq/dt=2026-01-02/part-0.parquet", "rees46/events.csv", "retailrocket/events.csv"]
    assert (summary["files_loaded"], summary["rows_read"], summary["rows_loaded"], summary["rows_rejected"]) == \
        (6, 28, 21, 7)
    assert [f["file"] for f in summary["files_failed"]] == [str(landing / "broken" / "_source.yml")]
    assert summary["files_failed"][0]["error"].startswith(f"{landing / 'broken' / '_source.yml'}: unknown key 'colums'")
    assert sorted((Path(f["file"]).relative_to(landing).as_posix(), f["reason"]) for f in summary["files_ignored"]) == [
        (".c.csv.part", "hidden file (a writer's temporary file?)"),
        ("broken/_source.yml", "source definition"),
        ("broken/x.csv", f"not loaded: its source definition {landing / 'broken' / '_source.yml'} is invalid"),
        ("events_pq/_SUCCESS", "not a data file (expected a name ending in .csv, .txt, .tsv, .csv.gz, .csv.zst, "
                               ".txt.gz, .txt.zst, .tsv.gz, .tsv.zst, .parquet, .pq)"),
        ("notes.json", "not a data file (expected a name ending in .csv, .txt, .tsv, .csv.gz, .csv.zst, .txt.gz, "
                       ".txt.zst, .tsv.gz, .tsv.zst, .parquet, .pq)"),
        ("rees46/_source.yml", "source definition"),
        ("retailrocket/_source.yml", "source definition"),
        ("retailrocket/items.csv", "category table of _source.yml"),
    ]
    # the partition folder's key is a column of each file's load
    assert rows(warehouse, f"select count(*) from raw.events where source_file like '{hive}%'") == [(3,)]
    assert rows(warehouse, "select format, count(*) from raw.loads group by 1 order by 1") == [
        (str(landing / "rees46" / "_source.yml"), 1), (str(landing / "retailrocket" / "_source.yml"), 1),
        ("generic", 4)]
    again = ingest_dir(landing, warehouse, max_reject_ratio=0.5)
    assert (again["files_loaded"], again["files_skipped"], again["rows_loaded"]) == (0, 6, 0)
