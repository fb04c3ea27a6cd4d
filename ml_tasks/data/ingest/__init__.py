"""Load behaviour log files into the DuckDB warehouse (``raw`` schema) without losing a row.

Every data row of a file ends up in exactly one of two tables: ``raw.events`` (canonical columns, plus
where the row came from) or ``raw.rejected_events`` (file, line number, raw text and the reason), so
``rows_read = rows_loaded + rows_rejected`` always holds. Each load is recorded in ``raw.loads``.

Sources (``sources.py``): the built-in formats ``generic``, ``taobao`` and ``movielens``
(``ml_tasks.contracts.SOURCE_FORMATS``) are predefined sources; any other layout is declared in a
``SOURCE.yml`` (column mapping, a category lookup table, the timestamp unit or format, the event-type
map, header, delimiter), given with ``--source`` or as ``_source.yml`` in a landing folder.

- ``generic``: CSV with the header ``user_id,item_id,category_id,event_type,event_ts`` (any order), or
  Parquet with those columns. ``event_type`` is one of ``features.EVENT_TYPES``; ``event_ts`` is an epoch
  in s, ms, us or ns (told apart by magnitude) or ISO-8601 (naive means UTC).
- ``taobao``: headerless ``user,item,category,behavior,timestamp``; behaviours ``pv`` (-> ``view``),
  ``fav``, ``cart``, ``buy``.
- ``movielens``: ``ratings.csv`` (``userId,movieId,rating,timestamp``; the path may be the folder) with
  ``movies.csv`` beside it. A rating becomes a ``review`` of the item ``movieId``; the movie's first
  genre is its category.

Containers: CSV (plain, gzip or zstd, recognised by content), a Parquet file, or a Parquet folder (flat
or hive-partitioned ``key=value/``), which is one load. DuckDB only ever reads the loader's private
copy of an input, made while hashing it (``scan.py``), so ``raw.loads.sha256`` is what was loaded.

Row rules (a row breaking one goes to ``raw.rejected_events``; all reasons of a row are listed, joined by
``"; "``): the layout's number of fields, well-formed CSV quoting, UTF-8 and at most ``MAX_LINE_BYTES``
per line, non-empty user, item and category ids (a lookup must know the item), an event type in the
source's map and not mapped to null, a parseable timestamp not before 1995-01-01 and not more than one
day after the load time. Blank lines are not rows; they are counted in ``blank_lines``. One event per
physical line: quoted fields may hold delimiters and doubled quotes, not line breaks.

File-level problems (missing or empty file, not text, columns that do not match the source, an invalid
source definition, already locked warehouse) raise :class:`IngestError` with one sentence, before
anything is written. So does a file with more than ``max_reject_ratio`` (default 20 %) of its rows
rejected (rows left out on purpose, mapped to null, do not count), naming the commonest reasons, and
any DuckDB failure during a load (one sentence with the file and line, never the data). A load is one
transaction: a failure part-way leaves no rows and no record. A file whose content (sha256) was loaded
before is skipped. Values are passed to DuckDB as data (bound parameters, temp tables or file reads),
never pasted into SQL; the SQL is assembled only from this package's own constants.

``raw.events.event_ts`` is a ``TIMESTAMP`` holding UTC (microsecond precision); dbt staging derives
epoch seconds from it.
"""

from ml_tasks.data.ingest.landing import ingest_dir
from ml_tasks.data.ingest.load import canonical_events, connect, ingest_file
from ml_tasks.data.ingest.rules import DEFAULT_MAX_REJECT_RATIO, SOURCE_FILE_NAME, IngestError
from ml_tasks.data.ingest.sources import PREDEFINED, Source, load_source, resolve_source

__all__ = [
    "DEFAULT_MAX_REJECT_RATIO", "PREDEFINED", "SOURCE_FILE_NAME", "IngestError", "Source", "canonical_events",
    "connect", "ingest_dir", "ingest_file", "load_source", "resolve_source",
]
