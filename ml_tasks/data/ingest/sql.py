"""A source as SQL over the private copy's lines (CSV) or columns (Parquet), judging every row.

The SQL text is assembled only from this module's constants, field positions (integers) and the
loader's own delimiter table; everything that comes from a file or a source definition (event-type
names, a timestamp format, lookup names, paths) is bound as a parameter or read from a temp table.
"""

from __future__ import annotations

from ml_tasks.data.ingest.rules import CSV_BUFFER_SIZE, DELIMITERS, DUCKDB_MAX_LINE_SIZE, MIN_EVENT_EPOCH

# --- reading CSV text --------------------------------------------------------------------------------

LINES_SQL = f"""
    select row_number() over () as line_number, line
    from read_csv($path, columns = {{{{'line': 'VARCHAR'}}}}, header = false, delim = '\\x01', quote = '',
                  escape = '', auto_detect = false, strict_mode = false, new_line = '{{new_line}}',
                  max_line_size = {DUCKDB_MAX_LINE_SIZE}, buffer_size = {CSV_BUFFER_SIZE})
"""

# a line's fields: a plain split when it has no quote, else a CSV-aware regex split and unquoting
_SPLIT_SQL = """
    select
        line_number,
        line,
        case when contains(line, '"')
             then regexp_extract_all(line || {d_expr}, '("(?:[^"]|"")*"|[^{d_class}"]*){d_re}', 1)
             else string_split(line, {d_expr})
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
        contains(line, '"') and length(array_to_string(raw_fields, {d_expr})) <> length(line) as bad_quoting,
        len(raw_fields) as n_fields
    from split
"""

# DuckDB's own (parallel) CSV reader, one VARCHAR column more than the layout has: a row with too many
# fields shows up there. Empty fields read as '' and missing ones as NULL (nullstr is a character that
# scan refuses). Only for files without quotes and empty lines, where row number = line number. The rows
# land in a temp table first (``native_rows``, in file order: insertion order is preserved), so the line
# number is the row id and the judging runs on every thread; a row_number() over the reader would make
# everything after it one ordered stream (the load of 10M rows: 17.8 s that way, 11-12 s this way).
NATIVE_ROWS_SQL = """
    create temp table native_rows as
    select *
    from read_csv($path, columns = {{{columns}}}, header = false, auto_detect = false, quote = '',
                  escape = '', delim = {d_lit}, new_line = '{new_line}', null_padding = true,
                  strict_mode = false, nullstr = '\\x01', max_line_size = {max_line},
                  buffer_size = {buffer})
"""

# row ids count from an offset inside the load's transaction: the first row is line 1
_NATIVE_SQL = """
    select * from (select rowid - (select min(rowid) from native_rows) + 1 as line_number, * from native_rows)
    where line_number > $skip_lines
"""


def _delimiter(delimiter: str) -> dict[str, str]:
    lit, expr, regex = DELIMITERS[delimiter]
    return {"d_lit": lit, "d_expr": expr, "d_re": regex, "d_class": "\\t" if delimiter == "\t" else delimiter}


def csv_fielded_sql(positions: dict[str, int], n_fields: int, new_line: str, simple: bool, delimiter: str) -> str:
    """The copy -> one row per data row with its canonical fields (by position).

    ``simple`` files go through DuckDB's CSV reader into ``native_rows`` (``native_rows_sql``; ``line``
    is filled in later for rejects only);
    the others through the ``lines`` temp table (every physical line with its number) and a split.
    """
    d = _delimiter(delimiter)
    if simple:
        source = _NATIVE_SQL
        n_found = " ".join(f"when c{i} is not null then {i}" for i in range(n_fields + 1, 0, -1))

        def field(name: str) -> str:
            return f"trim(p.c{int(positions[name])})"

        select_line = f"null::varchar as line, false as bad_quoting, case {n_found} else 0 end as n_fields"
    else:
        source = f"with split as ({_SPLIT_SQL.format(**d)}) {_UNQUOTE_SQL.format(**d)}"

        def field(name: str) -> str:
            return f"trim(p.f[{int(positions[name])}])"

        select_line = "p.line, p.bad_quoting, p.n_fields"
    return f"""
        select
            p.line_number,
            {select_line},
            $source_file as source_file,
            {field('user_id')} as user_id,
            {field('item_id')} as item_id,
            {field('category_id') if 'category_id' in positions else 'null::varchar'} as category_field,
            {field('event_type') if 'event_type' in positions else "''"} as event_type_raw,
            {field('event_ts')} as ts_raw,
            null::bigint as ts_native_us
        from ({source}) as p
    """


def native_rows_sql(n_fields: int, new_line: str, delimiter: str) -> str:
    """For ``simple`` files: the statement that reads the copy into ``native_rows`` (see above)."""
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n_fields + 2))
    return NATIVE_ROWS_SQL.format(columns=columns, new_line=new_line, max_line=DUCKDB_MAX_LINE_SIZE,
                                  buffer=CSV_BUFFER_SIZE, **_delimiter(delimiter))


def too_many_fields_sql(n_fields: int, new_line: str, delimiter: str) -> str:
    """For ``simple`` files: the rejects' raw text from a line-by-line read, and the exact field count
    of a row with too many fields (DuckDB's reader only shows that there is one more)."""
    d = _delimiter(delimiter)
    return f"""
        create or replace temp table rejects as
        with wanted as ({LINES_SQL.format(new_line=new_line)})
        select
            r.line_number,
            w.line as raw_line,
            case when r.n_fields = {int(n_fields) + 1}
                 then 'wrong number of fields: expected {int(n_fields)}, found ' || len(string_split(w.line, {d['d_expr']}))
                 else r.reason end as reason,
            r.excluded_only,
            r.source_file,
            r.n_fields
        from rejects as r
        join wanted as w on w.line_number = r.line_number
    """


# --- reading Parquet ---------------------------------------------------------------------------------


def _text(col: str, duck_type: str) -> str:
    """A Parquet value as the text a CSV would hold: floats that are whole numbers without '.0'."""
    t = duck_type.upper()
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return (f"case when {col} = trunc({col}) and abs({col}) < 1e19 then cast(cast({col} as hugeint) as varchar) "
                f"else cast({col} as varchar) end")
    return f"cast({col} as varchar)"


def parquet_fielded_sql(positions: dict[str, int], types: dict[str, str], n_columns: int, hive: bool) -> str:
    """The private copies (``$files``) -> one row per Parquet row with its canonical fields as text; a
    timestamp or date ``event_ts`` gives its microseconds directly."""
    aliases = ", ".join(f"c{i}" for i in range(1, n_columns + 1))

    def field(name: str) -> str:
        return f"trim({_text(f'p.c{int(positions[name])}', types[name])})"

    ts_col = f"p.c{int(positions['event_ts'])}"
    native = types["event_ts"].upper().startswith(("TIMESTAMP", "DATE"))
    ts_native = f"epoch_us(cast({ts_col} as timestamptz))" if native else "null::bigint"
    return f"""
        select
            p.row_no + 1 as line_number,
            p.line,
            false as bad_quoting,
            0 as n_fields,
            coalesce(pf.original, $source_file) as source_file,
            {field('user_id')} as user_id,
            {field('item_id')} as item_id,
            {field('category_id') if 'category_id' in positions else 'null::varchar'} as category_field,
            {field('event_type') if 'event_type' in positions else "''"} as event_type_raw,
            {field('event_ts')} as ts_raw,
            {ts_native} as ts_native_us
        from (
            select to_json(src)::varchar as line, filename, file_row_number, src.*
            from read_parquet($files, hive_partitioning = {str(bool(hive)).lower()}, union_by_name = true) as src
        ) as p(line, file, row_no, {aliases})
        left join parquet_files as pf on pf.copy = p.file
    """


# --- judging every row -------------------------------------------------------------------------------

_INT_RE = "'[+-]?[0-9]{1,19}'"
_DEC_RE = "'[+-]?([0-9]{1,19}\\.[0-9]*|\\.[0-9]+)'"
_ISO_RE = "'[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?'"
_ISO_US = f"case when regexp_full_match(ts_raw, {_ISO_RE}) then epoch_us(try_cast(ts_raw as timestamptz)) end"
#: declared unit -> microseconds per unit (as SQL)
_FACTORS = {"s": "1000000", "ms": "1000", "us": "1"}


def _ts_us_sql(unit: str) -> str:
    """Microseconds since the epoch (bigint) from ``ts_i`` (an integer), ``ts_d`` (a decimal) or
    ``ts_raw`` (text), by the source's unit; NULL when the text is none of them or out of range."""
    if unit == "auto":  # by magnitude: below 1e11 seconds, 1e14 milliseconds, 1e17 microseconds, else ns
        scaled = ("case when abs({v}) < 100000000000 then {v} * 1000000 when abs({v}) < 100000000000000 "
                  "then {v} * 1000 when abs({v}) < 100000000000000000 then {v} else {v} / 1000 end")
        return f"""case
            when ts_i is not null then {scaled.format(v='ts_i').replace(' / 1000 end', ' // 1000 end')}
            when ts_d is not null then try_cast(round({scaled.format(v='ts_d')}) as bigint)
            else {_ISO_US} end"""
    if unit == "iso":
        return _ISO_US
    if unit == "format":
        return "epoch_us(try_strptime(ts_raw, $ts_format))"
    if unit == "ns":
        return "case when ts_i is not null then ts_i // 1000 when ts_d is not null then try_cast(round(ts_d / 1000) as bigint) end"
    factor = _FACTORS[unit]
    return (f"case when ts_i is not null then try(ts_i * {factor}) "
            f"when ts_d is not null then try_cast(round(ts_d * {factor}) as bigint) end")


def _quoted(col: str) -> str:
    """``'value'`` for a reason string, cut to 60 characters."""
    return "chr(39) || left(" + col + ", 60) || chr(39)"


def judge_sql(fielded: str, *, n_fields: int, unit: str, lookup: bool, constant_type: bool) -> str:
    """From a ``fielded`` relation to one row per data row with the parsed values and ``reason``
    ('' = valid) and ``excluded_only`` (the row's one reason is an event type declared null)."""
    joins = []
    if lookup:
        joins.append("left join lookup as lk on lk.key = f.item_id")
        category = "coalesce(nullif(f.category_field, ''), lk.value)"
        category_reason = ("case when coalesce(category_id, '') <> '' or coalesce(item_id, '') = '' then null "
                           "when lk_found is null then $lookup_reason else 'missing category_id' end")
        found = "lk.found"
    else:
        category, found = "f.category_field", "null::boolean"
        category_reason = "case when coalesce(category_id, '') = '' then 'missing category_id' end"
    if constant_type:
        type_pos, event_type, excluded, type_known = "0", "$constant_event_type", "false", "true"
        type_reason = "null"
    else:  # the map as two bound lists: raw names ($type_raws) and their targets ($type_targets, NULL: left out)
        type_pos = "coalesce(list_position($type_raws, lower(f.event_type_raw)), 0)"
        event_type, excluded, type_known = "$type_targets[type_pos]", "type_pos > 0 and event_type is null", \
            "type_pos > 0"
        type_reason = (
            "case when coalesce(event_type_raw, '') = '' then 'missing event_type' "
            f"when not type_known then 'unknown event_type ' || {_quoted('event_type_raw')} "
            f"when excluded then 'event_type ' || {_quoted('event_type_raw')} || ' left out (null in event_types)' end"
        )
    wrong_count = (f"when n_fields <> {int(n_fields)} then 'wrong number of fields: expected {int(n_fields)}, "
                   "found ' || n_fields") if n_fields else ""
    return f"""
        with fielded as ({fielded}),
        joined as (
            select f.*, {category} as category_id, {found} as lk_found, {type_pos} as type_pos,
                   case when regexp_full_match(f.ts_raw, {_INT_RE})
                        then nullif(try_cast(f.ts_raw as bigint), -9223372036854775808) end as ts_i
            from fielded as f
            {' '.join(joins)}
        ),
        decimals as (
            select *, {event_type} as event_type,
                   case when ts_i is null and regexp_full_match(ts_raw, {_DEC_RE}) then try_cast(ts_raw as double)
                   end as ts_d
            from joined
        ),
        typed as (
            select *, {excluded} as excluded, {type_known} as type_known,
                   coalesce(ts_native_us, {_ts_us_sql(unit)}) as ts_us
            from decimals
        ),
        judged as (
            select
                *,
                case
                    when bad_quoting then 'malformed CSV quoting'
                    {wrong_count}
                    else concat_ws('; ',
                        case when coalesce(user_id, '') = '' then 'missing user_id' end,
                        case when coalesce(item_id, '') = '' then 'missing item_id' end,
                        {category_reason},
                        {type_reason},
                        case
                            when coalesce(ts_raw, '') = '' then 'missing event_ts'
                            when ts_us is null then 'unparseable event_ts ' || {_quoted('ts_raw')}
                            when ts_us < {MIN_EVENT_EPOCH * 1_000_000} then 'event_ts before 1995-01-01'
                            when ts_us > $max_epoch_us then 'event_ts more than 1 day after load time'
                        end
                    )
                end as reason
            from typed
        )
        select
            line_number,
            case when reason <> '' then line end as raw_line,
            n_fields,
            source_file,
            user_id,
            item_id,
            category_id,
            event_type,
            ts_us,
            reason,
            excluded and not contains(reason, '; ') as excluded_only
        from judged
    """


# --- the category lookup ------------------------------------------------------------------------------


def lookup_sql(n_fields: int, key_pos: int, value_pos: int, first_of: bool, new_line: str, delimiter: str) -> str:
    """The lookup copy -> temp table ``lookup(key, value, found)``, the first row of each key."""
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n_fields + 1))
    value = f"trim(c{int(value_pos)})"
    if first_of:
        value = f"split_part({value}, $first_of, 1)"
    return f"""
        create temp table lookup as
        select key, value, true as found from (
            select trim(c{int(key_pos)}) as key, nullif(trim({value}), '') as value, row_number() over () as rn
            from read_csv($path, columns = {{{columns}}}, header = false, skip = 1, quote = '"', escape = '"',
                          delim = {DELIMITERS[delimiter][0]}, auto_detect = false, null_padding = true,
                          strict_mode = false, new_line = '{new_line}', max_line_size = {DUCKDB_MAX_LINE_SIZE},
                          buffer_size = {CSV_BUFFER_SIZE})
        )
        where coalesce(key, '') <> ''
        qualify row_number() over (partition by key order by rn) = 1
    """


QUARANTINE_SQL = """
    insert into rejects (line_number, raw_line, reason, excluded_only, source_file)
    select line, text, reason, false, $source_file
    from read_json($path, columns = {'line': 'BIGINT', 'text': 'VARCHAR', 'reason': 'VARCHAR'},
                   format = 'newline_delimited')
"""

#: the three commonest reasons (a row's several reasons counted one by one; values in quotes left out)
TOP_REASONS_SQL = """
    with each as (
        select line_number, unnest(string_split(reason, '; ')) as reason from rejects where not excluded_only
    )
    select regexp_replace(reason, ' ''.*$', '') as kind, count(*) as n, min(line_number) as first_line
    from each
    group by kind
    order by n desc, kind
    limit 3
"""
