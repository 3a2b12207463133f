"""Verification that overlaps the copy: both sides' table digests taken while the data streams.

The outage runs from StackBlitz's stop to the verdict; digesting both servers after the copy
added a full scan of each to it. Here, while the copy runs:
- the source's tables are digested from the copy's own exported snapshot (the rows pg_dump
  reads), on a connection that imported it, from the moment the snapshot exists;
- each target table is digested as soon as the part holding its rows has been restored (its
  indexes do not change its rows; a materialized view once the post-data part refreshed it).

Stage 4 still owns the verdict. `finish` waits for both, re-confirms cheaply what could have
changed since a digest, digests again what it cannot confirm, reads sequences and large objects
on both sides at the end (as a verification after the copy does), and returns the same pair of
checks.data snapshots that data.compare and checks.rowdiff take. What it re-confirms:
- the source: that the exported snapshot still describes it, i.e. that txid_current_snapshot()
  is now what it was when the snapshot was exported: no transaction on the server has taken a
  transaction id (which every write takes) or ended since. Otherwise every source table is
  digested again now, so that a write during the outage (StackBlitz not stopped) is caught as
  it was when verification followed the copy.
- the target: that each table digested early still has the row count and the range of
  transaction ids (xmin) it had then. Any row inserted or updated since carries a newer
  transaction id and any row deleted changes the count; the check is a scan of the table's
  heap with no hashing and no detoasting, several times cheaper than the digest. A table that
  fails it is digested again, and the evidence names it.
Digests are checks.data's, with checks.textformat's settings on every connection and the run's
row digest (checks.rowdigest, decided in preflight, before the copy starts): the same digest as
a verification after the copy, whatever the session settings.

It needs only connections: a source that exports a snapshot for its pg_dump (direct mode; a
Kubernetes-mode stream can pass its pod's pg_dump `--snapshot` from `start_source`'s export)
calls `start_source`, and `loaded`/`all_loaded` as parts finish.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from checks import data, textformat
from checks.parts import Part, Table
from checks.rowdigest import RowDigest

Connect = Callable[[], psycopg.Connection]
CANCEL_S = 15

_XMIN = "min(xmin::text::bigint), max(xmin::text::bigint)"


@dataclass(frozen=True)
class _Digest:
    table: data.TableData
    xmin: tuple[int | None, int | None]  # the target's range of row versions when digested


@dataclass
class _Side:
    """One side's worker: a thread with one connection, digesting tables in turn."""

    name: str
    digests: dict[Table, _Digest] = field(default_factory=dict)
    error: BaseException | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)  # each digest's start, end
    conn: psycopg.Connection | None = None
    thread: threading.Thread | None = None


def _digest(
    conn: psycopg.Connection, schema: str, name: str, kind: str, row_digest: RowDigest
) -> _Digest:
    shape = data.row_shape(conn, schema, name, row_digest=row_digest)
    query = sql.SQL(
        "SELECT count(*), coalesce(sum({digest}), 0)::text, " + _XMIN + " FROM ONLY {table}"
    ).format(digest=shape.digest, table=sql.Identifier(schema, name))
    count, digest, low, high = conn.execute(query).fetchone()  # type: ignore[misc]
    table = data.TableData(schema, name, kind, int(count), digest, row_digest)
    return _Digest(table, (low, high))


def _still(conn: psycopg.Connection, digest: _Digest) -> bool:
    """Whether a table digested earlier still holds the same row versions."""
    t = digest.table
    query = sql.SQL("SELECT count(*), " + _XMIN + " FROM ONLY {}").format(
        sql.Identifier(t.schema, t.name)
    )
    count, low, high = conn.execute(query).fetchone()  # type: ignore[misc]
    return int(count) == t.rows and (low, high) == digest.xmin


def _snapshot_now(conn: psycopg.Connection) -> str:
    # txid_current_snapshot(), not pg_current_snapshot(): the embedded server may predate 13.
    return str(conn.execute("SELECT txid_current_snapshot()::text").fetchone()[0])  # type: ignore[index]


class Early:
    """The early digests of one copy; see the module's docstring."""

    def __init__(
        self,
        connect_target: Connect,
        emit: Callable[[str], None] | None = None,
        *,
        row_digest: RowDigest,
    ) -> None:
        self._connect_target = connect_target
        self._emit = emit
        self.row_digest = row_digest  # the run's (checks.rowdigest), for every digest here
        self.source = _Side("source")
        self.target = _Side("target")
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._queued: set[Table] = set()
        self._lock = threading.Lock()
        self._snapshot: str | None = None  # txid_current_snapshot() of the export
        self._copy_ended: float | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the copy started the source's early digests (a source that overlaps)."""
        return self._snapshot is not None

    # -- during the copy ------------------------------------------------------------------

    def start_source(self, connect_source: Connect, snapshot: str) -> None:
        """Import `snapshot` (while its exporter is still open) and digest every source table
        from it in the background."""
        conn = connect_source()  # autocommit: the transaction is opened by hand
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            textformat.apply(conn, local=True)
            self._snapshot = _snapshot_now(conn)
        except BaseException:
            conn.close()
            raise
        self.source.conn = conn
        self.source.thread = threading.Thread(
            target=self._run_source, name="sbm-verify-source", daemon=True
        )
        self.source.thread.start()

    def _run_source(self) -> None:
        conn = self.source.conn
        assert conn is not None
        try:
            for schema, name, kind in data.tables(conn):
                if self._closed:
                    return
                self._timed(self.source, conn, schema, name, kind)
            conn.execute("COMMIT")
        except BaseException as e:
            self.source.error = e
        finally:
            conn.close()

    def loaded(self, part: Part) -> None:
        """A data part was restored: its tables' target digests may start."""
        if part.tables is not None:
            self.loaded_tables(part.tables)
            return
        with self._connect_target() as conn:
            found = data.tables(conn)
        skip = set(part.excluded)
        self._enqueue((s, n, k) for s, n, k in found if k == "table" and (s, n) not in skip)

    def loaded_tables(self, tables: Iterable[Table]) -> None:
        """These tables' rows are all in (checks.tablecopy: the last of a table's slices)."""
        self._enqueue((s, n, "table") for s, n in tables)

    def all_loaded(self) -> None:
        """The post-data part was restored (materialized views refreshed): the copy is over."""
        self._copy_ended = time.time()
        with self._connect_target() as conn:
            found = data.tables(conn)
        self._enqueue(found)
        self._queue.put(None)

    def _enqueue(self, tables: Iterable[tuple[str, str, str]]) -> None:
        with self._lock:
            fresh = [t for t in tables if (t[0], t[1]) not in self._queued]
            self._queued.update((s, n) for s, n, _ in fresh)
            if self.target.thread is None:
                self.target.thread = threading.Thread(
                    target=self._run_target, name="sbm-verify-target", daemon=True
                )
                self.target.thread.start()
        for table in fresh:
            self._queue.put(table)

    def _run_target(self) -> None:
        try:
            with self._connect_target() as conn:
                self.target.conn = conn
                textformat.apply(conn, local=False)  # the connection is ours alone
                while (item := self._queue.get()) is not None and not self._closed:
                    self._timed(self.target, conn, *item)
        except BaseException as e:
            self.target.error = e

    def _timed(
        self, side: _Side, conn: psycopg.Connection, schema: str, name: str, kind: str
    ) -> None:
        started = time.time()
        side.digests[(schema, name)] = _digest(conn, schema, name, kind, self.row_digest)
        side.spans.append((started, time.time()))

    def wait(self) -> None:
        """Until both workers have done what the copy gave them."""
        for side in (self.source, self.target):
            if side.thread:
                side.thread.join()

    def close(self) -> None:
        """Stop both workers (a failed or interrupted copy): their queries are cancelled."""
        self._closed = True
        self._queue.put(None)
        deadline = time.monotonic() + CANCEL_S
        for side in (self.source, self.target):
            while side.thread and side.thread.is_alive() and time.monotonic() < deadline:
                if side.conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        side.conn.cancel_safe(timeout=2)
                side.thread.join(timeout=0.5)

    # -- stage 4 --------------------------------------------------------------------------

    def finish(
        self, connect_source: Connect, connect_target: Connect
    ) -> tuple[data.Snapshot, data.Snapshot, dict[str, object]]:
        """Both sides' snapshots for data.compare, once re-confirmed, and what the overlap did
        (for the evidence)."""
        try:
            self.wait()
        except BaseException:  # a signal: the workers' scans stop too
            self.close()
            raise
        started = time.time()
        found: dict[str, dict[str, object]] = {}

        def work(conn: psycopg.Connection, side: str) -> data.Snapshot:
            textformat.apply(conn, local=False)  # the connection is ours alone
            tables, found[side] = (self._source if side == "source" else self._target)(conn)
            return data.Snapshot(tables, data.sequences(conn), data.large_objects(conn))

        src, dst = data.on_both(connect_source, connect_target, work)
        copy_ended = self._copy_ended or started
        during = sum(
            max(0.0, min(end, copy_ended) - begin)
            for side in (self.source, self.target)
            for begin, end in side.spans
        )
        after = sum(end - begin for s in (self.source, self.target) for begin, end in s.spans)
        final = time.time() - started
        evidence: dict[str, object] = {
            **found,
            "digest_seconds_during_copy": round(during, 2),
            "digest_seconds_after_copy": round(after - during, 2),
            "final_check_seconds": round(final, 2),
            # The share of the verification's scanning done while the copy ran.
            "overlap": round(during / (after + final), 2) if after + final else 0.0,
        }
        return src, dst, evidence

    def _source(self, conn: psycopg.Connection) -> tuple[dict[Table, data.TableData], dict]:
        now = _snapshot_now(conn)
        still = self.source.error is None and self._snapshot == now
        early = {key: d.table for key, d in self.source.digests.items()}
        if still:
            return early, {
                "tables_digested_during_copy": len(early),
                "snapshot_still_current": True,
            }
        why = (
            f"its early digest failed ({_first_line(self.source.error)})"
            if self.source.error
            else f"it changed since the copy's snapshot ({self._snapshot} then, {now} now)"
        )
        self._say(f"verify source: {why}: digesting it again")
        return data.all_table_data(conn, row_digest=self.row_digest), {
            "tables_digested_during_copy": len(early),
            "snapshot_still_current": False,
            "digested_again": why,
        }

    def _target(self, conn: psycopg.Connection) -> tuple[dict[Table, data.TableData], dict]:
        early = {} if self.target.error else self.target.digests
        tables: dict[Table, data.TableData] = {}
        changed: list[str] = []
        for schema, name, kind in data.tables(conn):
            digest = early.get((schema, name))
            if digest is not None and _still(conn, digest):
                tables[(schema, name)] = digest.table
                continue
            if digest is not None:
                changed.append(f"{schema}.{name}")
                self._say(f"verify target: {schema}.{name} changed since its digest")
            tables[(schema, name)] = _digest(conn, schema, name, kind, self.row_digest).table
        found: dict[str, object] = {
            "tables_digested_during_copy": len(early),
            "tables_reconfirmed": len(early) - len(changed),
            "changed_since_digest": changed,
        }
        if self.target.error:
            found["early_digest_failed"] = _first_line(self.target.error)
        return tables, found

    def _say(self, message: str) -> None:
        if self._emit:
            self._emit(message)


def _first_line(e: BaseException | None) -> str:
    text = str(e).strip() if e else ""
    return text.splitlines()[0] if text else type(e).__name__
