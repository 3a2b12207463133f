"""A snapshot of the source exported for the copy's pg_dumps and held open by a read-only
session: in direct mode past the copy, so that the artifact is dumped from it after
verification, off the outage (--method stream); in Kubernetes mode for the copy, which the early
digests of --verify-during-copy read too (checks.overlap).

Writing the archive to the workdir while pg_restore read it doubled what the host wrote during
the outage (1.6 GB of archive beside the target's 1 GB at 1 GB) and added its SHA-256 to the
copy's CPU: on a 2-core host that was a third of the copy's time. The copy's pg_dumps all read
one exported snapshot; its exporting transaction stays open until the artifact's pg_dumps have
imported it too, so the artifact holds the very rows the target was loaded with.

Should the held session end before then (the source restarted, a port-forward dropped, a
server-side timeout), a new snapshot is as good when nothing changed in between: when its
txid_current_snapshot() is the held one's, no transaction on the server has taken a transaction
id (which every write takes) or ended since. Otherwise the artifact cannot be the copied data,
and the caller says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import psycopg

from checks import errors
from checks.endpoint import Endpoint


@dataclass
class Held:
    conn: psycopg.Connection
    name: str  # pg_export_snapshot(): what pg_dump --snapshot takes
    txids: str  # txid_current_snapshot() inside it: what "nothing changed since" compares

    def alive(self) -> bool:
        if self.conn.closed:
            return False
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


APPLICATION_NAME = "stackblitz-migrate snapshot"  # the source's DBA sees what holds it


def export(endpoint: Endpoint) -> Held:
    """A read-only REPEATABLE READ transaction on the source and its exported snapshot."""
    named = replace(endpoint, params={**endpoint.params, "application_name": APPLICATION_NAME})
    conn = named.connect(autocommit=False)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # Held idle for the restore and verification: a server-wide idle-in-transaction
        # timeout would end it (the session's own setting wins; any role may set it).
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        row = conn.execute("SELECT pg_export_snapshot(), txid_current_snapshot()::text").fetchone()
        assert row is not None
        return Held(conn, str(row[0]), str(row[1]))
    except BaseException:
        conn.close()
        raise


@contextlib.contextmanager
def same_data(endpoint: Endpoint, held: Held) -> Iterator[tuple[str, str]]:
    """The held snapshot's name while its session lives; if it ended, a new one exported now,
    provided the source is unchanged since the held one. Yields (name, how), `how` saying which.
    Raises DumpFailed when the source changed."""
    if held.alive():
        yield held.name, "the copy's own snapshot"
        return
    fresh = export(endpoint)
    try:
        if fresh.txids != held.txids:
            raise errors.DumpFailed(
                "the copy's snapshot of the source was lost (its session ended) and the source "
                f"changed since ({held.txids} then, {fresh.txids} now), so no archive of the "
                "copied rows can be written: the target is verified; take a dump of the target "
                "if an archive is needed"
            )
        yield fresh.name, "a new snapshot of the unchanged source (the copy's own was lost)"
    finally:
        fresh.close()
