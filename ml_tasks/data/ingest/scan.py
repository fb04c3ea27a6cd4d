"""Reading an input once in Python: its hash and the private copy the load reads, made in the same pass.

DuckDB never opens the user's file: it reads a copy named by the sha256 of what was read, in a folder
of the loader's own (no glob characters), so a name with ``[ ] * ?`` or a file rewritten during the
load cannot bring in other bytes than those recorded in ``raw.loads``. Text is decompressed on the way
(gzip, zstd: recognised by their first bytes) and checked line by line: a line that is not UTF-8 or is
longer than ``MAX_LINE_BYTES`` is quarantined (an empty line in the copy, its escaped text and reason in
a side file that becomes rows of ``raw.rejected_events``), so one bad line never refuses a whole file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ml_tasks.data.ingest.rules import (
    CHUNK,
    GZIP_MAGIC,
    LONG_LINE_PREVIEW,
    MAX_LINE_BYTES,
    SEP,
    ZSTD_MAGIC,
    IngestError,
)

HEAD_BYTES = 65536
_HALF = MAX_LINE_BYTES // 2


@dataclass(frozen=True)
class TextCopy:
    """The private, decompressed copy of a text file and what the pass over it found."""

    path: Path
    sha256: str  # of the bytes as stored (compressed or not)
    size: int  # bytes as stored
    head_lines: tuple[str, ...]  # the first lines of the copy (BOM and line endings removed)
    new_line: str  # '\\n' or '\\r\\n' for DuckDB's reader
    physical_lines: int
    simple: bool  # no quote character and no empty line: DuckDB's CSV reader keeps row = line
    quarantined: int  # lines emptied in the copy; their text and reason are in quarantine_path
    quarantine_path: Path
    first_quarantined: tuple[int, str] | None  # (line, reason) of the first one
    compression: str  # '', 'gzip' or 'zstd'


def _not_text(path: Path, found: str) -> IngestError:
    return IngestError(f"{path}: expected a UTF-8 text (CSV) file, found {found}.")


class _Hashing(io.RawIOBase):
    """A raw reader that feeds every byte it reads to the digests and the progress callback."""

    def __init__(self, fh: IO[bytes], digests: list[Any], on_bytes: Callable[[int], None]) -> None:
        self._fh, self._digests, self._on_bytes = fh, digests, on_bytes
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)
        if n:
            view = memoryview(buffer)[:n]
            for digest in self._digests:
                digest.update(view)
            self.size += n
            self._on_bytes(n)
        return n or 0


def copy_bytes(path: Path, dest: Path, digests: list[Any], on_bytes: Callable[[int], None]) -> int:
    """Copy a file as it is (Parquet, a lookup) while hashing it; returns the bytes copied."""
    with open(path, "rb") as fh, open(dest, "wb") as out:
        reader = _Hashing(fh, digests, on_bytes)
        shutil.copyfileobj(io.BufferedReader(reader, CHUNK), out, CHUNK)
        return reader.size


class _LineCopier:
    """Writes the copy from complete lines, quarantining the bad ones; keeps the counts."""

    def __init__(self, path: Path, out: IO[bytes], quarantine: Path) -> None:
        self.path, self.out, self.quarantine_path = path, out, quarantine
        self._quarantine: IO[str] | None = None
        self.lines = 0  # complete lines written
        self.quarantined = 0
        self.first_quarantined: tuple[int, str] | None = None
        self.head = bytearray()
        self.crlf = 0
        self.has_quote = self.has_empty = self.has_content = False

    def close(self) -> None:
        if self._quarantine is not None:
            self._quarantine.close()

    def _write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            if len(self.head) < HEAD_BYTES:
                self.head += data[: HEAD_BYTES - len(self.head)]

    def reject(self, line_number: int, text: str, reason: str, ending: bytes) -> None:
        if self._quarantine is None:
            self._quarantine = open(self.quarantine_path, "w", encoding="utf-8")
        self._quarantine.write(json.dumps({"line": line_number, "text": text, "reason": reason}) + "\n")
        self.quarantined += 1
        if self.first_quarantined is None:
            self.first_quarantined = (line_number, reason)
        self._write(ending)

    def part(self, part: bytes, final: bool = False) -> None:
        """Complete lines (each ending in \\n), or, when ``final``, the file's last line without one."""
        for bad, what in ((b"\x00", "NUL bytes"), (SEP.encode(), "control character U+0001")):
            pos = part.find(bad)
            if pos >= 0:
                line = self.lines + part.count(b"\n", 0, pos) + 1
                raise _not_text(self.path, f"binary data ({what} in line {line})")
        self._check_carriage_returns(part, final)
        self.has_content = self.has_content or bool(part.strip())
        long_suspect = any(b"\n" not in part[i:i + _HALF] for i in range(0, len(part) - _HALF + 1, _HALF))
        try:
            part.decode("utf-8")
            clean = not long_suspect
        except UnicodeDecodeError:
            clean = False
        if clean:
            self._stats(part)
            self._write(part)
            self.lines += 1 if final else part.count(b"\n")
            return
        if final:
            self._line(part, b"")
            return
        for line in part.split(b"\n")[:-1]:
            self._line(line, b"\n")

    def _line(self, line: bytes, ending: bytes) -> None:
        """One line without its \\n; ``ending`` is b"\\n", or b"" for an unterminated last line."""
        if ending and line.endswith(b"\r"):
            line, ending = line[:-1], b"\r\n"
        self.lines += 1
        if len(line) > MAX_LINE_BYTES:
            self.long_line(line[:LONG_LINE_PREVIEW], ending)
            return
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            self.reject(self.lines, line.decode("utf-8", errors="backslashreplace"), "not UTF-8", ending)
            return
        self._stats(line + ending)
        self._write(line + ending)

    def long_line(self, preview: bytes, ending: bytes) -> None:
        """A line over MAX_LINE_BYTES (already counted in ``lines``)."""
        self.has_content = True
        text = preview.decode("utf-8", errors="backslashreplace") + "..."
        self.reject(self.lines, text, f"line longer than {MAX_LINE_BYTES} bytes", ending)

    def _stats(self, part: bytes) -> None:
        """Quotes or empty lines make a file not ``simple``; once one is seen the other need not be looked for."""
        if self.has_quote or self.has_empty:
            return
        self.has_quote = b'"' in part
        self.has_empty = (part.startswith((b"\n", b"\r\n")) or b"\n\n" in part
                          or (b"\r" in part and b"\n\r\n" in part))

    def _check_carriage_returns(self, part: bytes, final: bool) -> None:
        cr = part.count(b"\r")
        if not cr:
            return
        crlf = part.count(b"\r\n")
        at_end = 1 if final and part.endswith(b"\r") else 0
        if cr - crlf - at_end > 0:
            pos = next(i for i in range(len(part)) if part[i:i + 1] == b"\r" and part[i + 1:i + 2] != b"\n")
            line = self.lines + part.count(b"\n", 0, pos) + 1
            raise IngestError(f"{self.path}: expected lines ending in \\n or \\r\\n, found carriage returns inside "
                              f"lines (old Mac line endings?) near line {line}.")
        if at_end:
            raise IngestError(f"{self.path}: expected lines ending in \\n or \\r\\n, found a carriage return at the end.")
        self.crlf += crlf


def _open_text(path: Path, buffered: io.BufferedReader) -> tuple[Any, str]:
    magic = buffered.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb"), "gzip"
    if magic.startswith(ZSTD_MAGIC):
        import pyarrow as pa

        return pa.CompressedInputStream(pa.PythonFile(buffered, mode="r"), "zstd"), "zstd"
    if magic.startswith(b"PK\x03\x04"):
        raise _not_text(path, "a zip archive (extract it first)")
    if magic.startswith(b"PAR1"):
        raise _not_text(path, "a Parquet file (name it *.parquet)")
    return buffered, ""


def copy_text(path: Path, dest_dir: Path, digests: list[Any], on_bytes: Callable[[int], None]) -> TextCopy:
    """One pass over a text file: hash what is read, decompress, check and copy line by line."""
    own = hashlib.sha256()
    handle, name = tempfile.mkstemp(dir=dest_dir, prefix="incoming-")
    os.close(handle)
    tmp = Path(name)
    quarantine = tmp.with_suffix(".rejects.ndjson")
    with open(path, "rb") as fh, open(tmp, "wb") as out:
        raw = _Hashing(fh, [own, *digests], on_bytes)
        buffered = io.BufferedReader(raw, CHUNK)
        stream, compression = _open_text(path, buffered)
        copier = _LineCopier(path, out, quarantine)
        try:
            _copy_lines(path, stream, compression, copier)
        finally:
            copier.close()
        while buffered.read(CHUNK):  # whatever follows a compressed stream is hashed too
            pass
    if not copier.has_content:
        raise IngestError(f"{path}: expected rows of behaviour events, found an empty file.")
    final = dest_dir / f"{own.hexdigest()}.csv"
    os.replace(tmp, final)
    head = bytes(copier.head).decode("utf-8", errors="ignore")
    lines = head.split("\n")
    if len(copier.head) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    return TextCopy(
        path=final, sha256=own.hexdigest(), size=raw.size,
        head_lines=tuple(ln.rstrip("\r") for ln in lines[:200]),
        new_line="\\r\\n" if copier.crlf else "\\n",
        physical_lines=copier.lines,
        simple=not (copier.has_quote or copier.has_empty or copier.quarantined),
        quarantined=copier.quarantined, quarantine_path=quarantine,
        first_quarantined=copier.first_quarantined, compression=compression,
    )


def _read(path: Path, stream: Any, compression: str) -> bytes:
    try:
        return stream.read(CHUNK)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        if not compression:
            raise
        detail = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise IngestError(f"{path}: expected {compression}-compressed text, found a corrupt or truncated "
                          f"{compression} stream ({detail}).") from None


def _copy_lines(path: Path, stream: Any, compression: str, copier: _LineCopier) -> None:
    carry = b""
    first = True
    skipping: bytes | None = None  # the preview of an over-long line being skipped
    while chunk := _read(path, stream, compression):
        if first:
            first = False
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
        if skipping is not None:
            pos = chunk.find(b"\n")
            if pos < 0:
                continue
            copier.lines += 1
            copier.long_line(skipping, b"\r\n" if chunk[pos - 1:pos] == b"\r" else b"\n")
            skipping, chunk = None, chunk[pos + 1:]
        buf = carry + chunk
        cut = buf.rfind(b"\n")
        if cut >= 0:
            copier.part(buf[:cut + 1])
            carry = buf[cut + 1:]
        else:
            carry = buf
        if len(carry) > MAX_LINE_BYTES:
            skipping, carry = carry[:LONG_LINE_PREVIEW], b""
    if skipping is not None:
        copier.lines += 1
        copier.long_line(skipping, b"")
    elif carry:
        copier.part(carry, final=True)


def csv_fields(line: str, delimiter: str = ",") -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return line.split(delimiter)


def peek_lines(path: Path, n_bytes: int = HEAD_BYTES) -> list[str]:
    """The first lines of a plain or gzip text file, for an early header check; [] when they are not
    clean text (the full pass then says what is wrong)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            fh.seek(0)
            if magic.startswith(GZIP_MAGIC):
                with gzip.GzipFile(fileobj=fh) as gz:
                    data = gz.read(n_bytes)
            elif magic.startswith(ZSTD_MAGIC):
                return []
            else:
                data = fh.read(n_bytes)
    except (OSError, EOFError, zlib.error):
        return []
    if len(data) == n_bytes:
        data = data[: data.rfind(b"\n") + 1]
    if b"\x00" in data or SEP.encode() in data or data.count(b"\r") != data.count(b"\r\n"):
        return []
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return []
    return [ln.rstrip("\r") for ln in text.split("\n")[:200]]
