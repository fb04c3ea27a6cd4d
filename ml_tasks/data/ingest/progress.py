"""A one-line progress bar on stderr while a big file is read and loaded."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


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
