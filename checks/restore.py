"""Restores a checked dump with psql, the seed's way (create, connect, restore), stopping at the
first error instead of carrying on as the seed's psql does."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import IO

from checks import dumpfile, errors, private
from checks.endpoint import Endpoint
from checks.pgtools import Toolset

# Where psql starts, as in the seed: the dump creates the database and connects to it itself.
MAINTENANCE_DB = "postgres"


def psql_argv(tools: Toolset, conninfo: str) -> list[str]:
    # -X: no ~/.psqlrc; ON_ERROR_STOP: exit 3 at the first error; the script itself connects
    # to the database it creates, so psql starts in the maintenance database.
    return [tools.path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo]


def restore(dump: dumpfile.DumpFile, target: Endpoint, tools: Toolset, log: Path) -> None:
    """Feed the dump to psql on the target; raise RestoreFailed naming psql's first error.

    The file is read again and its SHA-256 compared with the one recorded at dump time, so the
    bytes restored are the bytes that were checked.
    """
    maintenance = target.with_dbname(MAINTENANCE_DB)
    with private.open_private(log) as errlog:
        proc = subprocess.Popen(
            psql_argv(tools, maintenance.conninfo()),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
            env=target.child_env(),
        )
        assert proc.stdin
        sha = _feed(dump.path, proc.stdin)
        code = proc.wait()
    if code != 0:
        raise errors.RestoreFailed(
            f"psql stopped with exit code {code}: {first_error(log)} (full log: {log})"
        )
    if log.stat().st_size == 0:
        log.unlink()
    if sha is not None and sha != dump.sha256:
        raise errors.RestoreFailed(
            f"{dump.path} changed between its check and the restore: take the dump again"
        )


def _feed(path: Path, sink: IO[bytes]) -> str | None:
    """Decompress the file into psql's stdin; the file's SHA-256, or None if psql quit early."""
    digest = hashlib.sha256()
    try:
        try:
            with path.open("rb") as raw:
                for data in dumpfile.inflate(raw, digest.update):
                    sink.write(data)
        except errors.DumpFailed:
            pass  # cut short since its check: the digest cannot match the recorded one
        sink.close()
    except BrokenPipeError:
        return None  # psql stopped at an error; its exit code says so
    return digest.hexdigest()


def first_error(log: Path) -> str:
    """psql's first error in a log (or a line of ours, marked 'sbm:'), else its last line."""
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        if "ERROR:" in line or "FATAL:" in line or "error:" in line or "sbm:" in line:
            return line.strip()
    return lines[-1].strip() if lines else "no message"
