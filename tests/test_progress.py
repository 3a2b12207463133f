"""The progress lines long stages print: done, rate and time left, from a real byte stream."""

from __future__ import annotations

import re

from checks.progress import Progress


def test_rows_are_counted_and_time_left_is_estimated() -> None:
    lines: list[str] = []
    progress = Progress("dump → target", lines.append, rows_expected=400, every=0)
    for _ in range(10):
        progress.add(b"1\tsome value\n" * 10)
    assert progress.rows == 100 and progress.bytes == 10 * 130
    assert len(lines) == 10  # every=0: a line per chunk
    assert re.fullmatch(
        r"dump → target: 0 MB, 100 of ~400 rows, [\d,]+ MB/s, 25%, about [\d,]+ s left", lines[-1]
    ), lines[-1]
    summary = progress.summary()
    assert summary["seconds"] >= 0 and summary["megabytes_per_second"] >= 0  # type: ignore[operator]


def test_bytes_expected_wins_over_rows_and_nothing_is_printed_too_often() -> None:
    lines: list[str] = []
    progress = Progress("restore", lines.append, rows_expected=10, bytes_expected=4_000_000)
    progress.add(b"x" * 1_000_000, count_rows=False)
    assert lines == []  # the first line waits for EVERY seconds
    assert progress.rows == 0 and progress.fraction() == 0.25
    assert "25%" in progress.line()


def test_without_an_estimate_no_time_left_is_claimed() -> None:
    progress = Progress("dump", None)
    progress.add(b"a\nb\n")
    assert progress.fraction() is None
    line = progress.line()
    assert "left" not in line and "%" not in line and line.startswith("dump: 0 MB, ")


def test_advance_counts_work_by_size_and_says_how_far() -> None:
    """Verification advances by each table's size on disk as it finishes it."""
    lines: list[str] = []
    progress = Progress("verify source", lines.append, bytes_expected=3_000_000, every=0)
    progress.advance(1_000_000)
    progress.advance(2_000_000)
    assert progress.fraction() == 1.0 and progress.rows == 0
    assert lines[0].startswith("verify source: 1 MB, ") and "33%, about" in lines[0]
    assert "100%, about 0 s left" in lines[1]
