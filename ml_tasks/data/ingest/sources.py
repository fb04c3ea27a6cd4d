"""Sources: how a layout maps onto the canonical events. The built-in formats and ``SOURCE.yml`` files.

A source definition (YAML) has exactly these keys::

    columns:                 # canonical column: the file's column (a 1-based position when header: false)
      user_id: visitorid
      item_id: itemid
      category_id: categoryid          # optional when category_from is given
      event_type: event
      event_ts: timestamp
    category_from: {file: items.csv, key: itemid, value: categoryid}   # a CSV; path relative to the yml
    timestamp: {unit: auto}            # auto | s | ms | us | ns | iso, or {format: "%Y-%m-%d %H:%M:%S UTC"}
    event_types: {view: view, addtocart: cart, transaction: buy, remove_from_cart: null}  # null: not loaded
    header: true                       # optional, default true
    delimiter: ","                     # optional: , ; | or a tab

Every mistake in it is one :class:`IngestError` sentence naming the yml and the key, before anything
is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_tasks.contracts import CANONICAL_COLUMNS, EVENT_TYPES, SOURCE_FORMATS
from ml_tasks.data.ingest.rules import DELIMITERS, TIMESTAMP_UNITS, IngestError

KEYS = ("columns", "category_from", "timestamp", "event_types", "header", "delimiter")
LOOKUP_KEYS = ("file", "key", "value")


@dataclass(frozen=True)
class Lookup:
    """Categories from a second table: ``item_id`` -> the lookup's ``value`` where its ``key`` matches."""

    path: Path
    key: str
    value: str
    first_of: str | None = None  # keep the part before this separator (MovieLens genres 'A|B')
    header: tuple[str, ...] | None = None  # the exact header the lookup must have (MovieLens)


@dataclass(frozen=True)
class Source:
    """A layout. ``columns`` map canonical names to the file's column names (or 1-based positions)."""

    name: str  # 'generic', 'taobao', 'movielens' or the yml's path: raw.loads.format
    columns: Mapping[str, str | int]
    event_types: Mapping[str, str | None] = field(default_factory=dict)  # lower-cased raw -> canonical / None
    constant_event_type: str | None = None  # every row is this event type (MovieLens: review)
    timestamp_unit: str = "auto"
    timestamp_format: str | None = None
    header: bool = True
    delimiter: str = ","
    category_from: Lookup | None = None
    exact_header: bool = False  # the header must be exactly the columns, any order (generic)
    ordered_header: tuple[str, ...] | None = None  # the header must be exactly this (MovieLens)
    n_fields: int | None = None  # headerless: fields per row (None: as many as the first line has)
    layout: str = ""  # for messages about headerless files
    field_names: str = ""  # the fields of a fixed headerless layout, for messages
    yml: Path | None = None

    @property
    def label(self) -> str:
        return self.yml.name if self.yml else self.name


_IDENTITY = {name: name for name in EVENT_TYPES}

PREDEFINED: dict[str, Source] = {
    "generic": Source("generic", {c: c for c in CANONICAL_COLUMNS}, _IDENTITY, exact_header=True),
    "taobao": Source("taobao", {c: i + 1 for i, c in enumerate(CANONICAL_COLUMNS)},
                     {"pv": "view", "fav": "fav", "cart": "cart", "buy": "buy"}, header=False, n_fields=5,
                     layout="Taobao rows user,item,category,behavior,timestamp",
                     field_names="user,item,category,behavior,timestamp"),
    # the movies.csv path is filled in per file (beside ratings.csv): see plan.locate
    "movielens": Source("movielens", {"user_id": "userId", "item_id": "movieId", "event_ts": "timestamp"},
                        constant_event_type="review",
                        ordered_header=("userId", "movieId", "rating", "timestamp"),
                        category_from=Lookup(Path("movies.csv"), "movieId", "genres", first_of="|",
                                             header=("movieId", "title", "genres"))),
}
assert tuple(PREDEFINED) == SOURCE_FORMATS


def resolve_source(source: str | Path | Source, data_path: Path | str = "") -> Source:
    """A predefined name, a path to a source definition, or a :class:`Source` -> the Source."""
    if isinstance(source, Source):
        return source
    if isinstance(source, str) and source in PREDEFINED:
        return PREDEFINED[source]
    if isinstance(source, Path) or str(source).lower().endswith((".yml", ".yaml")):
        return load_source(Path(source))
    raise IngestError(f"{data_path}: expected a format among {', '.join(SOURCE_FORMATS)}, found '{source}'.")


def load_source(yml: Path) -> Source:
    """Read and check a source definition; every mistake is one sentence naming the key."""
    import yaml

    yml = Path(yml).expanduser().resolve()
    if not yml.is_file():
        raise IngestError(f"{yml}: expected a source definition (YAML), found "
                          f"{'a folder' if yml.is_dir() else 'nothing'} at that path.")
    try:
        doc = yaml.safe_load(yml.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise IngestError(f"{yml}: expected a UTF-8 source definition, found bytes that are not UTF-8.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" in line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise IngestError(f"{yml}: expected a YAML source definition, found text YAML cannot read{where} "
                          f"({problem}).") from None
    return _parse(yml, doc)


def _fail(yml: Path, text: str) -> IngestError:
    return IngestError(f"{yml}: {text}.")


def _mapping(yml: Path, value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(yml, f"expected {key} to be a mapping, found {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {str(value)[:60]!r}"


def _parse(yml: Path, doc: Any) -> Source:
    doc = _mapping(yml, doc, "the file")
    unknown = [str(k) for k in doc if k not in KEYS]
    if unknown:
        raise _fail(yml, f"unknown key '{unknown[0]}' (the keys are {', '.join(KEYS)})")
    if "columns" not in doc:
        raise _fail(yml, "expected the key columns (canonical column: the file's column), found none")
    header = doc.get("header", True)
    if not isinstance(header, bool):
        raise _fail(yml, f"expected header to be true or false, found {_shown(header)}")
    delimiter = doc.get("delimiter", ",")
    if delimiter not in DELIMITERS:
        shown = "a tab" if delimiter == "\t" else _shown(delimiter)
        raise _fail(yml, f"expected delimiter to be one of , ; | or a tab, found {shown}")
    category_from = _lookup(yml, doc["category_from"]) if doc.get("category_from") is not None else None
    columns = _columns(yml, doc["columns"], header, category_from is not None)
    unit, fmt = _timestamp(yml, doc.get("timestamp"))
    event_types = _event_types(yml, doc["event_types"]) if doc.get("event_types") is not None else dict(_IDENTITY)
    return Source(name=str(yml), columns=columns, event_types=event_types, timestamp_unit=unit,
                  timestamp_format=fmt, header=header, delimiter=delimiter, category_from=category_from,
                  layout=f"the columns of {yml.name}", yml=yml)


def _columns(yml: Path, value: Any, header: bool, has_lookup: bool) -> dict[str, str | int]:
    columns = _mapping(yml, value, "columns")
    for name in columns:
        if name not in CANONICAL_COLUMNS:
            raise _fail(yml, f"columns: unknown canonical column '{name}' (they are {', '.join(CANONICAL_COLUMNS)})")
    for name in CANONICAL_COLUMNS:
        if name not in columns and not (name == "category_id" and has_lookup):
            hint = " or give category_from" if name == "category_id" else ""
            raise _fail(yml, f"columns: the canonical column {name} is missing (map it to a column of the file{hint})")
    out: dict[str, str | int] = {}
    for name, col in columns.items():
        if header:
            if isinstance(col, bool) or not isinstance(col, (str, int)) or str(col).strip() == "":
                raise _fail(yml, f"columns: expected {name} to name a column of the file, found {_shown(col)}")
            out[name] = str(col).strip()
        else:
            if isinstance(col, bool) or not isinstance(col, int) or col < 1:
                raise _fail(yml, f"columns: with header: false, expected {name} to be a field position (1, 2, ...), "
                                 f"found {_shown(col)}")
            out[name] = col
    return out


def _lookup(yml: Path, value: Any) -> Lookup:
    spec = _mapping(yml, value, "category_from")
    keys = sorted(spec, key=str)
    if keys != sorted(LOOKUP_KEYS):
        extra = [str(k) for k in spec if k not in LOOKUP_KEYS]
        what = f"an unknown key '{extra[0]}'" if extra else f"only {', '.join(map(str, keys)) or 'nothing'}"
        raise _fail(yml, f"category_from: expected the keys file, key and value, found {what}")
    for key in LOOKUP_KEYS:
        if not isinstance(spec[key], (str, int)) or isinstance(spec[key], bool) or not str(spec[key]).strip():
            raise _fail(yml, f"category_from: expected {key} to be a name, found {_shown(spec[key])}")
    path = (yml.parent / str(spec["file"])).resolve()
    if not path.is_file():
        raise _fail(yml, f"category_from: expected the file {spec['file']} (relative to this file), "
                         f"found nothing at {path}")
    return Lookup(path=path, key=str(spec["key"]).strip(), value=str(spec["value"]).strip())


def _timestamp(yml: Path, value: Any) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    spec = _mapping(yml, value, "timestamp")
    if sorted(spec, key=str) == ["unit"]:
        unit = spec["unit"]
        if unit not in TIMESTAMP_UNITS:
            raise _fail(yml, f"timestamp: expected unit to be one of {', '.join(TIMESTAMP_UNITS)}, found {_shown(unit)}")
        return unit, None
    if sorted(spec, key=str) == ["format"]:
        fmt = spec["format"]
        if not isinstance(fmt, str) or "%" not in fmt:
            raise _fail(yml, f"timestamp: expected format to be a strptime pattern such as '%Y-%m-%d %H:%M:%S', "
                             f"found {_shown(fmt)}")
        return "format", fmt
    raise _fail(yml, "timestamp: expected exactly one of unit or format, found "
                     f"{', '.join(map(str, spec)) or 'nothing'}")


def _event_types(yml: Path, value: Any) -> dict[str, str | None]:
    spec = _mapping(yml, value, "event_types")
    out: dict[str, str | None] = {}
    for raw, target in spec.items():
        if isinstance(raw, bool) or raw is None:
            raise _fail(yml, f"event_types: the key {raw} is a YAML {'null' if raw is None else 'boolean'}; "
                             "quote it (e.g. 'on': view)")
        key = str(raw).strip().lower()
        if not key:
            raise _fail(yml, "event_types: expected event type names as keys, found an empty one")
        if key in out:
            raise _fail(yml, f"event_types: '{raw}' is listed twice (names match without regard to case)")
        if target is not None and (not isinstance(target, str) or target.strip().lower() not in EVENT_TYPES):
            raise _fail(yml, f"event_types: '{raw}' maps to {_shown(target)}, which is not an event type "
                             f"(expected one of {', '.join(EVENT_TYPES)}, or null to leave it out)")
        out[key] = None if target is None else target.strip().lower()
    if not out:
        raise _fail(yml, "event_types: expected at least one event type, found none")
    return out
