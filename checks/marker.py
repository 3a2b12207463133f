"""The "unverified" mark on the target database: a comment naming the run, set from the moment
the run creates the database until verification passes.

Whatever stops a run (a signal, a lost server, a full disk), a marked database is recognisable
afterwards as a partial copy of ours: the next run replaces it without --allow-drop-target,
--verify-only refuses it, and a failed run may drop it. A database without the mark is the
operator's (or verified) and is never dropped by a failed run.

The database is created by the restore itself (pg_restore -C, or the seed script's CREATE
DATABASE), so the mark cannot be set in the same transaction: a watcher polls the target while
the copy runs and marks the database as soon as it appears (and again if the dump's own
COMMENT ON DATABASE overwrites the mark). Until then, a fraction of a second while the schema
loads, the database is unmarked; a run cut off then still drops it itself when the target is
reachable (its OID is new).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg
from psycopg import sql

from checks import errors
from checks.endpoint import Endpoint

PREFIX = "stackblitz-migrate: UNVERIFIED partial copy"
POLL_S = 0.2


def text(run: str) -> str:
    return f"{PREFIX} from run {run}; do not point StackBlitz at it (run the migration again)"


def is_ours(comment: str | None) -> bool:
    return bool(comment and comment.startswith(PREFIX))


def state(conn: psycopg.Connection, database: str) -> tuple[int, str | None] | None:
    """The database's (OID, comment), None when it does not exist."""
    row = conn.execute(
        "SELECT oid::bigint, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = %s",
        (database,),
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def comment(conn: psycopg.Connection, database: str, value: str | None) -> None:
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(value))
    )


@contextlib.contextmanager
def watching(target: Endpoint, database: str, *, before: int | None, run: str) -> Iterator[None]:
    """While the block copies, mark the database as soon as a new one (OID other than `before`)
    exists; at a normal end, make sure it is marked (raise if it cannot be)."""
    done = threading.Event()
    label = text(run)

    def loop() -> None:
        conn: psycopg.Connection | None = None
        while not done.wait(POLL_S):
            try:
                conn = conn or target.connect()
                _mark_if_new(conn, database, before, label)
            except (psycopg.Error, errors.MigrationError):
                if conn is not None:
                    conn.close()  # the target is away: try again on the next tick
                conn = None
        if conn is not None:
            conn.close()

    thread = threading.Thread(target=loop, name="sbm-marker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    with target.connect() as conn:
        if not _mark_if_new(conn, database, before, label):
            raise errors.RestoreFailed(f"the restore did not create {database} on the target")


def _mark_if_new(conn: psycopg.Connection, database: str, before: int | None, label: str) -> bool:
    found = state(conn, database)
    if found is None or found[0] == before:
        return False
    if found[1] != label:
        comment(conn, database, label)
    return True
