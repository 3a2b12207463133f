"""Levers measured one at a time against the same source, for the note on what each was worth.

Each is timed with a fresh target database, like the runbook and the floor in bench/run.py:
- `plain_pipe`: `pg_dump | psql` with no artifact at all: what streaming costs before keeping
  the file;
- `directory_format`: `pg_dump -Fd -j2 -Z zstd:1` to a directory, then `pg_restore -j2`: the
  parallel formats, which must finish the dump before the restore may begin.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from checks import pgtools
from fixtures import pgserver
from fixtures.sample_db import DATABASE as DB

Timer = Callable[[str, Callable[[], None]], float]


def _env(server: pgserver.Server) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": server.password}


def plain_pipe(
    src: pgserver.Server, dst: pgserver.Server, tools: pgtools.Toolset, timed: Timer
) -> dict[str, float]:
    def run() -> None:
        pg_dump = subprocess.Popen(
            [tools.path("pg_dump"), "--if-exists", "-xcCO", "-d", src.dsn(DB)],
            stdout=subprocess.PIPE,
            env=_env(src),
        )
        subprocess.run(
            [tools.path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dst.dsn()],
            stdin=pg_dump.stdout,
            stdout=subprocess.DEVNULL,
            env=_env(dst),
            check=True,
        )
        assert pg_dump.wait() == 0

    return {"total_s": round(timed("lever: pg_dump | psql, no artifact", run), 1)}


def directory_format(
    src: pgserver.Server,
    dst: pgserver.Server,
    tools: pgtools.Toolset,
    work: Path,
    timed: Timer,
) -> dict[str, float]:
    out = work / "directory-dump"

    def dump() -> None:
        flags = ["-Fd", "-j2", "-Z", "zstd:1", "-xO", "-f", str(out)]
        subprocess.run(
            [tools.path("pg_dump"), *flags, "-d", src.dsn(DB)],
            env=_env(src),
            check=True,
        )

    def restore() -> None:
        flags = ["-j2", "-C", "--if-exists", "-c", "-xO", "-e"]
        subprocess.run(
            [tools.path("pg_restore"), *flags, "-d", dst.dsn(), str(out)],
            env=_env(dst),
            check=True,
            stderr=subprocess.DEVNULL,  # the NOTICE for the first DROP DATABASE IF EXISTS
        )

    dump_s = timed("lever: pg_dump -Fd -j2 -Z zstd:1", dump)
    restore_s = timed("lever: pg_restore -j2", restore)
    size = sum(p.stat().st_size for p in out.iterdir())
    return {
        "dump_s": round(dump_s, 1),
        "restore_s": round(restore_s, 1),
        "total_s": round(dump_s + restore_s, 1),
        "artifact_bytes": size,
    }
