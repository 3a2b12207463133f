"""The peer the runbook is timed against: `pgcopydb clone` (Debian's pgcopydb, installed by
`scripts/peers` or `scripts/setup --peers`), on the same source into a fresh target database.

pgcopydb copies and builds indexes in parallel and verifies nothing; the figure that matters is
the runbook's outage (copy and verification) over pgcopydb's copy alone. Its jobs are the
runbook's --jobs: the same number of data streams and index builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from fixtures import pgserver
from fixtures.sample_db import DATABASE as DB


def available() -> str | None:
    """Why the peer cannot run here, or None."""
    if shutil.which("pgcopydb") is None:
        return "pgcopydb is not installed: run scripts/peers (or scripts/setup --peers) first"
    return None


def _uri(server: pgserver.Server, dbname: str) -> str:
    return f"postgresql://{server.user}@{server.host}:{server.port}/{dbname}"


def pgcopydb_clone(
    src: pgserver.Server, dst: pgserver.Server, work: Path, jobs: int
) -> dict[str, object]:
    """Time `pgcopydb clone` into a fresh, empty target database (it must exist beforehand)."""
    with psycopg.connect(**dst.connect_kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    directory = work / "pgcopydb"
    shutil.rmtree(directory, ignore_errors=True)
    # The passwords reach pgcopydb's pg_dump and pg_restore through a private passfile.
    passfile = work / "pgpass"
    passfile.write_text("".join(f"{s.host}:{s.port}:*:{s.user}:{s.password}\n" for s in (src, dst)))
    passfile.chmod(0o600)
    argv = [
        "pgcopydb",
        "clone",
        "--source",
        _uri(src, DB),
        "--target",
        _uri(dst, DB),
        "--table-jobs",
        str(jobs),
        "--index-jobs",
        str(jobs),
        "--no-owner",
        "--no-acl",
        "--dir",
        str(directory),
    ]
    print(f"bench: pgcopydb clone --table-jobs {jobs} --index-jobs {jobs} ...", flush=True)
    log = work / "pgcopydb.log"
    started = time.monotonic()
    with log.open("wb") as out:
        done = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PGPASSFILE": str(passfile)},
        )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench: pgcopydb clone failed ({done.returncode}):\n{tail}")
    print(f"bench: pgcopydb clone: {seconds:.1f} s", flush=True)
    shutil.rmtree(directory, ignore_errors=True)
    return {"seconds": round(seconds, 1), "jobs": jobs, "version": _version()}


def _version() -> str:
    out = subprocess.run(["pgcopydb", "--version"], capture_output=True, text=True).stdout
    return next((line.split()[-1] for line in out.splitlines() if "version" in line), "?")
