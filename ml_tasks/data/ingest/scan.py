"""Reading a file once in Python: its hash, text and encoding checks, the header; a progress bar."""

from __future__ import annotations

import codecs
import csv
import hashlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_tasks.data.ingest.rules import CHUNK, SEP, IngestError

# --- reading the file once in Python: hash, text checks, header -------------------------------------


@dataclass(frozen=True)
class Scan:
    sha256: str
    size: int
    first_line: str  # without BOM and line ending
    head_lines: tuple[str, ...]  # the first few lines, for the format checks
    new_line: str  # '\n' or '\r\n' for DuckDB's reader
    physical_lines: int
    simple: bool  # no quote character and no empty line: DuckDB's CSV reader keeps row = line


def _not_text(path: Path, found: str) -> IngestError:
    return IngestError(f"{path}: expected a UTF-8 text (CSV) file, found {found}.")


def scan_text(path: Path, digest: Any, on_bytes: Callable[[int], None]) -> Scan:
    """One pass over a text file: sha256, UTF-8 validity, no NUL/control separators, line endings."""
    size = path.stat().st_size
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = b""
    lines_before = 0
    n_cr = n_crlf = 0
    prev_cr = False
    has_content = False
    last_byte = b""
    has_quote = has_empty = False
    tail = b"\n"  # the bytes before the chunk (an empty line may straddle two chunks)
    with open(path, "rb") as fh:
        first = True
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if first:
                first = False
                head = chunk[:65536]
                if chunk.startswith(b"\x1f\x8b"):
                    raise _not_text(path, "gzip-compressed data (decompress it first)")
                if chunk.startswith(b"PK\x03\x04"):
                    raise _not_text(path, "a zip archive (extract it first)")
                if chunk.startswith(b"PAR1"):
                    raise _not_text(path, "a Parquet file (name it *.parquet)")
            for bad, what in ((b"\x00", "NUL bytes"), (SEP.encode(), "control character U+0001")):
                pos = chunk.find(bad)
                if pos >= 0:
                    line = lines_before + chunk.count(b"\n", 0, pos) + 1
                    raise _not_text(path, f"binary data ({what} in line {line})")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines_before + chunk.count(b"\n", 0, exc.start) + 1
                raise _not_text(path, f"bytes that are not UTF-8 in line {line} "
                                      f"(byte 0x{chunk[exc.start]:02x}; re-encode the file as UTF-8)") from None
            cr = chunk.count(b"\r")
            if cr or prev_cr:
                n_cr += cr
                n_crlf += chunk.count(b"\r\n") + (1 if prev_cr and chunk[:1] == b"\n" else 0)
                bare = n_cr - n_crlf - (1 if chunk.endswith(b"\r") else 0)
                if bare > 0:
                    raise IngestError(f"{path}: expected lines ending in \\n or \\r\\n, found carriage returns "
                                      f"inside lines (old Mac line endings?) near line {lines_before + 1}.")
            prev_cr = chunk.endswith(b"\r")
            last_byte = chunk[-1:]
            has_quote = has_quote or b'"' in chunk
            if not has_empty:
                joined = tail + chunk
                has_empty = b"\n\n" in joined or b"\n\r\n" in joined
                tail = joined[-2:]
            if not has_content and chunk.strip():
                has_content = True
            lines_before += chunk.count(b"\n")
            on_bytes(len(chunk))
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _not_text(path, "a truncated UTF-8 character at the end") from None
    if prev_cr:  # a final bare CR (no \n after it)
        raise IngestError(f"{path}: expected lines ending in \\n or \\r\\n, found a carriage return at the end.")
    if not has_content:
        raise IngestError(f"{path}: expected rows of behaviour events, found an empty file.")
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff")
    lines = text.split("\n")
    if len(head) == 65536 and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    lines = [ln.rstrip("\r") for ln in lines[:200]]
    return Scan(
        sha256=digest.hexdigest(),
        size=size,
        first_line=lines[0] if lines else "",
        head_lines=tuple(lines),
        new_line="\\r\\n" if n_crlf else "\\n",
        physical_lines=lines_before + (0 if last_byte == b"\n" else 1),
        simple=not (has_quote or has_empty),
    )


def csv_fields(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def hash_file(path: Path, on_bytes: Callable[[int], None], digest: Any | None = None) -> Any:
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            on_bytes(len(chunk))
    return digest


# --- progress ---------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr: bytes hashed, then DuckDB's own query progress."""

    def __init__(self, enabled: bool, label: str, total_bytes: int) -> None:
        self.enabled = enabled
        self.label = label
        self.total = max(total_bytes, 1)
        self.done = 0
        self._last = 0.0

    def bytes(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        self._draw("checking", self.done / self.total)

    def _draw(self, stage: str, frac: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        frac = min(max(frac, 0.0), 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} {stage:<9} [{bar:<30}] {frac:6.1%}")
        sys.stderr.flush()

    @contextmanager
    def query(self, con: Any, stage: str) -> Iterator[None]:
        """Show DuckDB's progress of the statement(s) run inside the block."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.25):
                try:
                    pct = con.query_progress()
                except Exception:  # noqa: BLE001 - the bar is best effort
                    return
                if pct is not None and pct >= 0:
                    self._draw(stage, pct / 100.0, force=True)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._draw(stage, 1.0, force=True)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
