"""Compares the data of two databases: row counts, content digests, sequences, large objects.

A table's content digest is the sum of a 64-bit digest of each row printed as text (RowShape);
which hash gives those 64 bits (PostgreSQL's own, or MD5) is decided once per run, on both
servers together (checks.rowdigest), and travels with every digest taken with it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from checks import textformat
from checks.progress import Progress
from checks.rowdigest import RowDigest

T = TypeVar("T")
CANCEL_S = 15  # for both sides' scans to stop once one has failed or a signal came

_TABLES = """
SELECT n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_COLUMNS = """
SELECT a.attname, a.atttypid = 'bytea'::regtype FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attname
"""

_SEQUENCES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class TableData:
    schema: str
    name: str
    kind: str  # "table" or "materialized view"
    rows: int
    digest: str  # order-independent sum of the rows' 64-bit digests, over columns in name order
    row_digest: RowDigest  # the hash that gave them: digests compare only under the same one


def estimated_rows(conn: psycopg.Connection) -> int:
    """The planner's estimate of the rows in every table (pg_class.reltuples), for progress."""
    row = conn.execute(
        "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchone()
    return int(row[0]) if row else 0


def tables(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    kinds = {"r": "table", "m": "materialized view"}
    return [(s, n, kinds[k]) for s, n, k in conn.execute(_TABLES).fetchall()]


@dataclass(frozen=True)
class RowShape:
    """How a table's rows are digested: its columns in name order, each as the digest prints it."""

    columns: list[str]
    values: list[sql.Composable]  # a bytea column enters as the hash of its bytes
    row_digest: RowDigest

    @property
    def row(self) -> sql.Composable:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(self.values))

    @property
    def digest(self) -> sql.Composable:
        """One row's 64-bit digest: the run's hash of the row printed as text."""
        return self.row_digest.of_text(self.row)

    @property
    def column_digests(self) -> list[sql.Composable]:
        """Each column's own digest, in the order of `columns` (to name the columns that differ)."""
        return [self.row_digest.of_text(sql.SQL("ROW({})").format(v)) for v in self.values]


def row_shape(
    conn: psycopg.Connection, schema: str, name: str, *, row_digest: RowDigest
) -> RowShape:
    """The row digest of one table, shared by the whole-table pass, the early digests
    (checks/overlap.py) and the row narrowing (checks/rowdiff.py), so that all see the same rows
    as different."""
    qualified = sql.Identifier(schema, name)
    columns = conn.execute(_COLUMNS, (qualified.as_string(conn),)).fetchall()
    values: list[sql.Composable] = [
        row_digest.of_bytes(sql.Identifier(c)) if is_bytea else sql.Identifier(c)
        for c, is_bytea in columns
    ]
    return RowShape([c for c, _ in columns], values, row_digest)


def table_data(
    conn: psycopg.Connection, schema: str, name: str, kind: str, *, row_digest: RowDigest
) -> TableData:
    """Count and digest one table in one scan.

    Each row is printed as text over its columns in name order (so a digest does not depend on
    column order), with checks.textformat's settings (so it does not depend on the session's),
    hashed to 64 bits (`row_digest`), and the hashes summed: the sum is independent of row
    order, counts duplicate rows, and changes when any one value's text changes. A bytea column
    enters the row as the hash of its bytes: printing it as text would double it into hex first,
    which made file contents most of the verification's time.
    """
    shape = row_shape(conn, schema, name, row_digest=row_digest)
    # sum() of bigint accumulates in 128-bit integers: faster than casting each to numeric.
    query = sql.SQL("SELECT count(*), coalesce(sum({digest}), 0)::text FROM ONLY {table}").format(
        digest=shape.digest, table=sql.Identifier(schema, name)
    )
    count, digest = conn.execute(query).fetchone()  # type: ignore[misc]
    return TableData(schema, name, kind, int(count), digest, row_digest)


def all_table_data(
    conn: psycopg.Connection, progress: Progress | None = None, *, row_digest: RowDigest
) -> dict[tuple[str, str], TableData]:
    """Every table's count and digest; `progress` advances by each table's size on disk."""
    textformat.apply(conn, local=False)  # the connection is ours alone: no need to restore
    listed = [(s, n, k, _size(conn, s, n)) for s, n, k in tables(conn)]
    if progress:
        progress.bytes_expected = sum(size for *_, size in listed) or None
    found = {}
    for schema, name, kind, size in listed:
        found[(schema, name)] = table_data(conn, schema, name, kind, row_digest=row_digest)
        if progress:
            progress.advance(size)
    return found


def _size(conn: psycopg.Connection, schema: str, name: str) -> int:
    row = conn.execute(
        "SELECT pg_table_size(%s::regclass)", (sql.Identifier(schema, name).as_string(conn),)
    ).fetchone()
    return int(row[0]) if row else 0


def sequences(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    """Every sequence's (last_value, is_called), which is what pg_dump carries over."""
    values = {}
    for schema, name in conn.execute(_SEQUENCES).fetchall():
        query = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
        last, called = conn.execute(query).fetchone()  # type: ignore[misc]
        values[f"{schema}.{name}"] = (int(last), bool(called))
    return values


def large_objects(conn: psycopg.Connection) -> dict[int, str]:
    """Every large object's MD5, by OID (pg_dump keeps OIDs)."""
    rows = conn.execute(
        "SELECT m.oid::bigint, md5(lo_get(m.oid)) FROM pg_largeobject_metadata m ORDER BY 1"
    ).fetchall()
    return {int(oid): digest for oid, digest in rows}


@dataclass(frozen=True)
class Snapshot:
    tables: dict[tuple[str, str], TableData]
    sequences: dict[str, tuple[int, bool]]
    large_objects: dict[int, str]


def snapshot(
    conn: psycopg.Connection, progress: Progress | None = None, *, row_digest: RowDigest
) -> Snapshot:
    tabs = all_table_data(conn, progress, row_digest=row_digest)
    return Snapshot(tabs, sequences(conn), large_objects(conn))


def snapshot_both(
    source: Callable[[], psycopg.Connection],
    target: Callable[[], psycopg.Connection],
    emit: Callable[[str], None] | None = None,
    *,
    row_digest: RowDigest,
) -> tuple[Snapshot, Snapshot]:
    """Both sides at once, each on its own server: verification takes the longer, not the sum."""

    def work(conn: psycopg.Connection, side: str) -> Snapshot:
        progress = Progress(f"verify {side}", emit) if emit else None
        return snapshot(conn, progress, row_digest=row_digest)

    return on_both(source, target, work)


def on_both(
    source: Callable[[], psycopg.Connection],
    target: Callable[[], psycopg.Connection],
    work: Callable[[psycopg.Connection, str], T],
) -> tuple[T, T]:
    """`work(conn, "source")` and `work(conn, "target")` at once, each on its own connection."""

    opened: list[psycopg.Connection] = []

    def run(connect: Callable[[], psycopg.Connection], side: str) -> T:
        with connect() as conn:
            opened.append(conn)
            return work(conn, side)

    with ThreadPoolExecutor(max_workers=2) as pool:
        src, dst = pool.submit(run, source, "source"), pool.submit(run, target, "target")
        try:
            return src.result(), dst.result()
        except BaseException:
            # A signal, or one side failing: the other side's scan (minutes on a large table)
            # is cancelled rather than waited for, until both threads have stopped.
            deadline = time.monotonic() + CANCEL_S
            while not (src.done() and dst.done()) and time.monotonic() < deadline:
                for conn in list(opened):
                    with contextlib.suppress(psycopg.Error):
                        conn.cancel_safe(timeout=2)
                futures.wait([src, dst], timeout=0.5)
            raise


@dataclass(frozen=True)
class Comparison:
    tables: list[dict[str, object]]
    sequences: list[dict[str, object]]
    large_objects: dict[str, object]
    differences: list[str]

    @property
    def equal(self) -> bool:
        return not self.differences


def compare(source: Snapshot, target: Snapshot) -> Comparison:
    differences: list[str] = []
    table_rows: list[dict[str, object]] = []
    for key in sorted(source.tables.keys() | target.tables.keys()):
        src, dst = source.tables.get(key), target.tables.get(key)
        label = ".".join(key)
        entry: dict[str, object] = {
            "schema": key[0],
            "name": key[1],
            "kind": (src or dst).kind,  # type: ignore[union-attr]
            "source_rows": src.rows if src else None,
            "target_rows": dst.rows if dst else None,
        }
        if src is None or dst is None:
            differences.append(
                f"{label}: {'missing on target' if dst is None else 'extra on target'}"
            )
            entry.update(rows_match=False, content_match=False, match=False, row_differences=None)
        else:
            if src.row_digest != dst.row_digest:  # a caller's mistake, never the data's
                raise ValueError(f"{label}: digests of different hashes cannot be compared")
            rows_ok = src.rows == dst.rows
            content_ok = src.digest == dst.digest
            if not rows_ok:
                differences.append(f"{label}: {src.rows} rows on source, {dst.rows} on target")
            elif not content_ok:
                differences.append(f"{label}: same row count, different content")
            entry.update(rows_match=rows_ok, content_match=content_ok, match=rows_ok and content_ok)
            # Filled in by checks/rowdiff.explain for a table that differs; none when it matches.
            entry["row_differences"] = [] if rows_ok and content_ok else None
        table_rows.append(entry)

    seq_rows: list[dict[str, object]] = []
    for name in sorted(source.sequences.keys() | target.sequences.keys()):
        s, t = source.sequences.get(name), target.sequences.get(name)
        ok = s == t
        seq_rows.append(
            {
                "name": name,
                "source": {"last_value": s[0], "is_called": s[1]} if s else None,
                "target": {"last_value": t[0], "is_called": t[1]} if t else None,
                "match": ok,
            }
        )
        if not ok:
            differences.append(f"sequence {name}: source {_seq(s)}, target {_seq(t)}")

    lo_missing = sorted(source.large_objects.keys() - target.large_objects.keys())
    lo_extra = sorted(target.large_objects.keys() - source.large_objects.keys())
    lo_changed = sorted(
        oid
        for oid in source.large_objects.keys() & target.large_objects.keys()
        if source.large_objects[oid] != target.large_objects[oid]
    )
    differences += [f"large object {oid}: missing on target" for oid in lo_missing]
    differences += [f"large object {oid}: extra on target" for oid in lo_extra]
    differences += [f"large object {oid}: different content" for oid in lo_changed]
    lo_summary: dict[str, object] = {
        "source_count": len(source.large_objects),
        "target_count": len(target.large_objects),
        "match": not (lo_missing or lo_extra or lo_changed),
    }
    return Comparison(table_rows, seq_rows, lo_summary, differences)


def _seq(value: tuple[int, bool] | None) -> str:
    if value is None:
        return "missing"
    return f"last_value {value[0]}{'' if value[1] else ' (not called)'}"
