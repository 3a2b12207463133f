"""Restores a checked dump with psql, the seed's way (create, connect, restore), stopping at the
first error instead of carrying on as the seed's psql does."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from checks import children, dumpfile, errors, marker, private, stream
from checks.endpoint import Endpoint
from checks.pgtools import Toolset
from checks.progress import Progress

RESTORER_GRACE_S = 30  # how long a cut-off restore in a pod gets to notice and quit
# Where psql starts, as in the seed: the dump creates the database and connects to it itself.
MAINTENANCE_DB = "postgres"


def psql_argv(tools: Toolset, conninfo: str) -> list[str]:
    # -X: no ~/.psqlrc; ON_ERROR_STOP: exit 3 at the first error; the script itself connects
    # to the database it creates, so psql starts in the maintenance database.
    return [tools.path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo]


def restore(
    dump: dumpfile.DumpFile,
    target: Endpoint,
    tools: Toolset,
    log: Path,
    progress: Progress | None = None,
) -> None:
    """Feed the dump to psql on the target; raise RestoreFailed naming psql's first error.

    The file is read again and its SHA-256 compared with the one recorded at dump time, so the
    bytes restored are the bytes that were checked.
    """
    maintenance = target.with_dbname(MAINTENANCE_DB)
    with private.open_private(log) as errlog:
        proc = children.popen(
            psql_argv(tools, maintenance.conninfo()),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
            env=target.child_env(),
        )
        assert proc.stdin
        sha = _feed(dump.path, proc.stdin, progress)
        code = proc.wait()
    if code != 0:
        raise stopped("psql", code, log)
    if log.stat().st_size == 0:
        log.unlink()
    if sha is not None and sha != dump.sha256:
        raise errors.RestoreFailed(
            f"{dump.path} changed between its check and the restore: take the dump again"
        )


def _feed(path: Path, sink: IO[bytes], progress: Progress | None = None) -> str | None:
    """Decompress the file into psql's stdin; the file's SHA-256, or None if psql quit early."""
    digest = hashlib.sha256()
    try:
        try:
            with (
                path.open("rb") as raw,
                progress.streaming() if progress else contextlib.nullcontext(),
            ):
                for data in dumpfile.inflate(raw, digest.update):
                    sink.write(data)
                    if progress:
                        progress.add(data)
        except errors.DumpFailed:
            pass  # cut short since its check: the digest cannot match the recorded one
        sink.close()
    except BrokenPipeError:
        return None  # psql stopped at an error; its exit code says so
    return digest.hexdigest()


def pg_restore_argv(tools: Toolset, conninfo: str, *, creates: bool) -> list[str]:
    """--method stream: pg_restore of an archive on stdin."""
    return [tools.path("pg_restore"), *stream.restore_flags(creates=creates), "-d", conninfo]


def stopped(program: str, code: int, log: Path) -> errors.RestoreFailed:
    return errors.RestoreFailed(
        f"{program} stopped with exit code {code}: {first_error(log)} (full log: {log})"
    )


def database_oid(target: Endpoint, database: str) -> int | None:
    """The OID of `database` on the target, None when there is none."""
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        found = marker.state(conn, database)
    return found[0] if found else None


def drop_partial(target: Endpoint, database: str, before: int | None, *, restorer: str) -> str:
    """Drop what a failed restore created of `database` on the target; say what became of it.

    `before` is the database's OID before the restore began. A database with another OID was
    created by this run, and one marked unverified (checks.marker) by an earlier one: either
    holds only a partial copy, which a new attempt would refuse; one with the same OID and no
    mark is the operator's and stays as it was. A restore cut off in a pod may
    still be running there: the sessions named `restorer` (their application_name) are waited
    for first, so that nothing is created after the check.
    """
    try:
        with target.connect(dbname=MAINTENANCE_DB) as conn:
            deadline = time.monotonic() + RESTORER_GRACE_S
            while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (restorer,)
            ).fetchone() != (0,):
                time.sleep(0.5)
            found = marker.state(conn, database)
            if found is None:
                return f"the target has no {database}"
            if found[0] == before and not marker.is_ours(found[1]):
                return f"the target's {database} was left as it was"
            # FORCE: a restorer that outlived the grace period must not keep it alive.
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
    except (psycopg.Error, errors.MigrationError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"the partly restored {database} may still be on the target ({first}); it is marked "
            "unverified, and the same command run again replaces it"
        )
    return f"the partly restored {database} was dropped from the target"


def first_error(log: Path) -> str:
    """psql's first error in a log (or a line of ours, marked 'sbm:'), else its last line."""
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        if "ERROR:" in line or "FATAL:" in line or "error:" in line or "sbm:" in line:
            return line.strip()
    return lines[-1].strip() if lines else "no message"
