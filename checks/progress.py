"""Progress of a long copy, as the operator watching the outage wants it: done, rate, time left.

Rows are counted as newlines: in a plain dump every COPY row is one line (a newline inside a
value is written as \\n), so the count is exact for data and off only by the schema's lines.
The total is the source's own estimate (pg_class.reltuples), so "time left" is an estimate too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

EVERY = 10.0  # seconds between lines: often enough to see it move, rare enough to read a log


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


class Progress:
    def __init__(
        self,
        label: str,
        emit: Callable[[str], None] | None,
        *,
        rows_expected: int | None = None,
        bytes_expected: int | None = None,
        every: float = EVERY,
    ) -> None:
        self.label = label
        self.emit = emit
        self.rows_expected = rows_expected or None
        self.bytes_expected = bytes_expected or None
        self.every = every
        self.bytes = 0
        self.rows = 0
        self.started = time.monotonic()
        self._next = self.started + every
        self._lock = threading.Lock()  # a stream may come in parts, at once
        self.active = 0  # streams inside their copy loop now (checks.stall watches them)
        self.beats = 0  # signs of a copy moving where its bytes cannot be counted

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Around a copy loop: while any is inside one, bytes are expected to move."""
        with self._lock:
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def add(self, chunk: bytes, *, count_rows: bool = True) -> None:
        rows = chunk.count(b"\n") if count_rows else 0
        with self._lock:
            self.bytes += len(chunk)
            self.rows += rows
        self._tick()

    def add_rows(self, rows: int) -> None:
        """Rows done that are not lines in the bytes (checks.tablecopy: an estimate)."""
        with self._lock:
            self.rows += rows

    def advance(self, nbytes: int) -> None:
        """Count bytes done without the bytes themselves (a table scanned, say)."""
        with self._lock:
            self.bytes += nbytes
        self._tick()

    def beat(self) -> None:
        """The copy moved, by an amount not known (checks.kubernetes: a pod whose
        /proc/<pid>/io cannot be read): the stall watch sees it, the count does not."""
        with self._lock:
            self.beats += 1

    def _tick(self) -> None:
        if self.emit is None:
            return
        now = time.monotonic()
        with self._lock:  # one line per period, however many streams report
            due = now >= self._next
            if due:
                self._next = now + self.every
        if due:
            self.emit(self.line(now))

    def fraction(self) -> float | None:
        if self.bytes_expected:
            return min(self.bytes / self.bytes_expected, 1.0)
        if self.rows_expected:
            return min(self.rows / self.rows_expected, 1.0)
        return None

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        parts = [f"{self.label}: {_mb(self.bytes)}"]
        if self.rows_expected:
            parts.append(f"{self.rows:,} of ~{self.rows_expected:,} rows")
        parts.append(f"{_mb(self.bytes / elapsed)}/s")
        done = self.fraction()
        if done is not None and done > 0:
            left = elapsed * (1 - done) / done
            parts.append(f"{done:.0%}, about {left:,.0f} s left")
        return ", ".join(parts)

    def summary(self) -> dict[str, object]:
        """For the evidence: what was copied, how long it took, how fast."""
        seconds = time.monotonic() - self.started
        return {
            "seconds": round(seconds, 1),
            "megabytes_per_second": round(self.bytes / 1e6 / max(seconds, 1e-6), 1),
        }
