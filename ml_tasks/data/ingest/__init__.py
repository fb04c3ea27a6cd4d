"""Load behaviour log files into the DuckDB warehouse (``raw`` schema) without losing a row.

Every data row of a file ends up in exactly one of two tables: ``raw.events`` (canonical columns, plus
where the row came from) or ``raw.rejected_events`` (file, line number, raw text and the reason), so
``rows_read = rows_loaded + rows_rejected`` always holds. Each load is recorded in ``raw.loads``.

Formats (``ml_tasks.contracts.SOURCE_FORMATS``):

- ``generic``: CSV with the header ``user_id,item_id,category_id,event_type,event_ts`` (any order), or
  Parquet with those columns. ``event_type`` is one of ``features.EVENT_TYPES``; ``event_ts`` is epoch
  seconds (integer or decimal) or ISO-8601 (naive means UTC).
- ``taobao``: headerless ``user,item,category,behavior,timestamp``; behaviours ``pv`` (-> ``view``),
  ``fav``, ``cart``, ``buy``; epoch seconds.
- ``movielens``: ``ratings.csv`` (``userId,movieId,rating,timestamp``; the path may be the folder) with
  ``movies.csv`` beside it. A rating becomes a ``review`` of the item ``movieId``; the movie's first
  genre is its category.

Row rules (a row breaking one goes to ``raw.rejected_events``; all reasons of a row are listed, joined by
``"; "``): the format's number of fields, well-formed CSV quoting, non-empty user, item and category ids,
an event type in the vocabulary after the format's mapping (case-insensitive), a parseable timestamp
not before 1995-01-01 and not more than one day after the load time. Blank lines are not rows; they are
counted in ``blank_lines``. One event per physical line: quoted fields may hold commas and doubled
quotes, not line breaks.

File-level problems (missing or empty file, not text, not UTF-8, columns that do not match the format,
already locked warehouse) raise :class:`IngestError` with one sentence, before anything is written. A
load is one transaction: a failure part-way leaves no rows. A file whose content (sha256) was loaded
before is skipped. Values are passed to DuckDB as data (bound parameters or file reads), never pasted
into SQL text; the SQL is assembled only from this module's own constants.

``raw.events.event_ts`` is a ``TIMESTAMP`` holding UTC (microsecond precision); dbt staging derives
epoch seconds from it.
"""

from ml_tasks.data.ingest.load import canonical_events, connect, ingest_dir, ingest_file
from ml_tasks.data.ingest.rules import IngestError

__all__ = ["IngestError", "canonical_events", "connect", "ingest_dir", "ingest_file"]
