"""Each format as SQL over the file's lines (CSV) or columns (Parquet), judging every row."""

from __future__ import annotations

from ml_tasks.data.ingest.rules import EVENT_TYPE_MAPS, MIN_EVENT_EPOCH

# --- the formats as SQL over lines ------------------------------------------------------------------


def _sql_str(value: str) -> str:
    """A SQL string literal for this module's own constants (never for data)."""
    return "'" + value.replace("'", "''") + "'"


def _event_type_case(fmt: str, raw: str) -> str:
    mapping = EVENT_TYPE_MAPS[fmt]
    if fmt == "movielens":
        return "'review'"
    whens = " ".join(f"when {_sql_str(k)} then {_sql_str(v)}" for k, v in mapping.items())
    return f"case lower({raw}) {whens} end"


LINES_SQL = """
    select row_number() over () as line_number, line
    from read_csv($path, columns = {{'line': 'VARCHAR'}}, header = false, delim = '\\x01', quote = '',
                  escape = '', auto_detect = false, strict_mode = false, new_line = '{new_line}')
"""

# a line's fields: a plain split when it has no quote, else a CSV-aware regex split and unquoting
_SPLIT_SQL = """
    select
        line_number,
        line,
        case when contains(line, '"')
             then regexp_extract_all(line || ',', '("(?:[^"]|"")*"|[^,"]*),', 1) else string_split(line, ',')
        end as raw_fields
    from lines
    where line_number > $skip_lines and line is not null and line <> ''
"""

_UNQUOTE_SQL = """
    select
        line_number,
        line,
        case when contains(line, '"')
             then list_transform(raw_fields,
                                 lambda x: case when x[1] = '"' then replace(x[2:-2], '""', '"') else x end)
             else raw_fields
        end as f,
        contains(line, '"') and length(array_to_string(raw_fields, ',')) <> length(line) as bad_quoting,
        len(raw_fields) as n_fields
    from split
"""

# DuckDB's own (parallel) CSV reader, one VARCHAR column more than the format has: a row with too many
# fields shows up there. Empty fields read as '' and missing ones as NULL (nullstr is a character that
# scan_text refuses). Only for files without quotes and empty lines, where row number = line number.
_NATIVE_SQL = """
    select * from (
        select row_number() over () as line_number, *
        from read_csv($path, columns = {{{columns}}}, header = false, auto_detect = false, quote = '',
                      escape = '', new_line = '{new_line}', null_padding = true, strict_mode = false,
                      nullstr = '\\x01')
    )
    where line_number > $skip_lines
"""


def judge_sql(fielded: str, fmt: str, n_fields: int) -> str:
    """From a ``fielded`` relation (line_number, line, bad_quoting, n_fields, the raw canonical fields)
    to one row per data row with the parsed values and ``reason`` ('' = valid)."""
    return f"""
        with fielded as ({fielded}),
        typed as (
            select
                *,
                {_event_type_case(fmt, 'event_type_raw')} as event_type,
                {_TS_EPOCH_SQL} as ts_s
            from fielded
        ),
        judged as (
            select
                *,
                case
                    when bad_quoting then 'malformed CSV quoting'
                    when n_fields <> {int(n_fields)}
                        then 'wrong number of fields: expected {int(n_fields)}, found ' || n_fields
                    else concat_ws('; ',
                        case when coalesce(user_id, '') = '' then 'missing user_id' end,
                        case when coalesce(item_id, '') = '' then 'missing item_id' end,
                        {_category_reason(fmt)},
                        {_event_type_reason(fmt)},
                        case
                            when coalesce(ts_raw, '') = '' then 'missing event_ts'
                            when ts_s is null then 'unparseable event_ts ' || {_quoted('ts_raw')}
                            when ts_s < {MIN_EVENT_EPOCH} then 'event_ts before 1995-01-01'
                            when ts_s > $max_epoch then 'event_ts more than 1 day after load time'
                        end
                    )
                end as reason
            from typed
        )
        select
            line_number,
            case when reason <> '' then line end as raw_line,
            n_fields,
            user_id,
            item_id,
            category_id,
            event_type,
            ts_s,
            reason
        from judged
    """


def csv_fielded_sql(fmt: str, pos: dict[str, int], n_fields: int, new_line: str, simple: bool) -> str:
    """A CSV file -> one row per data row with its canonical fields (by this module's own positions).

    ``simple`` files go through DuckDB's CSV reader (``line`` is filled in later for rejects only);
    the others through the ``lines`` temp table (every physical line with its number) and a split.
    """
    if simple:
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n_fields + 2))
        source = _NATIVE_SQL.format(columns=columns, new_line=new_line)
        n_found = " ".join(f"when c{i} is not null then {i}" for i in range(n_fields + 1, 0, -1))

        def field(name: str) -> str:
            return f"trim(p.c{int(pos[name])})"

        select_line = f"null::varchar as line, false as bad_quoting, case {n_found} else 0 end as n_fields"
    else:
        source = f"with split as ({_SPLIT_SQL}) {_UNQUOTE_SQL}"

        def field(name: str) -> str:
            return f"trim(p.f[{int(pos[name])}])"

        select_line = "p.line, p.bad_quoting, p.n_fields"
    if fmt == "movielens":
        category, event_type = "m.category_id", "''"
        extra = f", m.movie_found, {field('item_id')} as movie_id"
        joins = f"left join movies as m on m.movie_id = {field('item_id')}"
    else:
        category, event_type, extra, joins = field("category_id"), field("event_type"), "", ""
    return f"""
        select
            p.line_number,
            {select_line},
            {field('user_id')} as user_id,
            {field('item_id')} as item_id,
            {category} as category_id,
            {event_type} as event_type_raw,
            {field('event_ts')} as ts_raw
            {extra}
        from ({source}) as p
        {joins}
    """


def _quoted(col: str) -> str:
    """``'value'`` for a reason string, cut to 60 characters."""
    return "chr(39) || left(" + col + ", 60) || chr(39)"


def _category_reason(fmt: str) -> str:
    if fmt == "movielens":
        return ("case when coalesce(movie_id, '') <> '' and movie_found is null "
                "then 'movieId not found in movies.csv' end")
    return "case when coalesce(category_id, '') = '' then 'missing category_id' end"


def _event_type_reason(fmt: str) -> str:
    if fmt == "movielens":
        return "null"
    return (
        "case when coalesce(event_type_raw, '') = '' then 'missing event_type' "
        f"when event_type is null then 'unknown event_type ' || {_quoted('event_type_raw')} end"
    )


# epoch seconds (double) from an epoch or ISO-8601 string; NULL when it is neither
_TS_EPOCH_SQL = """
    case
        when regexp_full_match(ts_raw, '[0-9]{1,18}') then cast(ts_raw as bigint)::double
        when regexp_full_match(ts_raw, '[+-]?[0-9]{1,18}(\\.[0-9]*)?') then cast(ts_raw as double)
        when regexp_full_match(ts_raw, '[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?')
            then epoch(try_cast(ts_raw as timestamptz))
    end
"""

def parquet_fielded_sql(ts_type: str) -> str:
    """Parquet rows -> canonical fields as text; a timestamp column becomes epoch seconds first."""
    if ts_type.upper().startswith(("TIMESTAMP", "DATE")):
        ts_raw = "cast(epoch(event_ts) as varchar)"
    else:
        ts_raw = "trim(cast(event_ts as varchar))"
    return f"""
        select
            file_row_number + 1 as line_number,
            to_json({{'user_id': user_id, 'item_id': item_id, 'category_id': category_id,
                      'event_type': event_type, 'event_ts': event_ts}})::varchar as line,
            false as bad_quoting,
            5 as n_fields,
            trim(cast(user_id as varchar)) as user_id,
            trim(cast(item_id as varchar)) as item_id,
            trim(cast(category_id as varchar)) as category_id,
            trim(cast(event_type as varchar)) as event_type_raw,
            {ts_raw} as ts_raw
        from read_parquet($path, file_row_number = true)
    """


MOVIES_SQL = """
    create temp table movies as
    select
        trim(movieId) as movie_id,
        nullif(trim(split_part(genres, '|', 1)), '') as category_id,
        true as movie_found
    from read_csv($path, header = true, quote = '"', escape = '"', auto_detect = false,
                  columns = {'movieId': 'VARCHAR', 'title': 'VARCHAR', 'genres': 'VARCHAR'})
    qualify row_number() over (partition by trim(movieId)) = 1
"""
