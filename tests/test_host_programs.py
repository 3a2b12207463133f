"""What the host must have, per mode: direct mode and the rehearsal run PostgreSQL's programs
here, and when they are missing, preflight refuses in one line that says where it looked and
which packages to install, before anything changes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import data, errors, pgtools, rowdigest, schema
from fixtures import pgserver
from tests.runbook_cli import REPO, direct_args, hidden, postgresql_program_dirs, run_runbook

DB = "sbm_host_programs"


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


def _state(server: pgserver.Server) -> dict[str, object]:
    """Every database on the server, with DB's schema and data: to prove nothing was touched."""
    with _admin(server) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]
    state: dict[str, object] = {"databases": names}
    if DB in names:
        with _admin(server, DB) as conn:
            state[DB] = (schema.snapshot(conn), data.snapshot(conn, row_digest=rowdigest.FAST))
    return state


@pytest.fixture
def source_db(pg15: pgserver.Server, pg18: pgserver.Server) -> Iterator[None]:
    with _admin(pg15) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    with _admin(pg15, DB) as conn:
        conn.execute("CREATE TABLE projects (id bigint PRIMARY KEY, name text)")
        conn.execute("INSERT INTO projects SELECT i, 'p' || i FROM generate_series(1, 100) i")
    yield
    for server in (pg15, pg18):
        with _admin(server) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB))
            )


def test_direct_mode_without_client_programs_is_refused_in_preflight(
    source_db: None, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """--pg-bindir at an empty directory: the one place looked in, named, and the packages to
    install for the target's version; preflight refuses, nothing is dumped or created."""
    empty = tmp_path / "bin"
    empty.mkdir()
    before = (_state(pg15), _state(pg18))
    outcome = run_runbook(
        tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB), "--pg-bindir", str(empty)
    )
    assert outcome.code == 1, outcome.output[-3000:]
    refused = outcome.check("test_dump_and_restore_programs_are_installed")
    expected = (
        f"no pg_dump, pg_restore and psql of PostgreSQL 15 to 18 on this host (looked in: "
        f"--pg-bindir {empty}: no pg_dump): install postgresql-client-18 (Debian/Ubuntu) or "
        "postgresql18 (RHEL, from PGDG), or pass --pg-bindir DIR"
    )
    assert refused["outcome"] == "failed" and refused["message"] == f"ToolMissing: {expected}"
    # The only refusal, in one line, and the stages that would change something never ran.
    doc = outcome.evidence
    assert doc["outcome"]["reason"] == f"preflight: ToolMissing: {expected}"
    assert f"outcome: FAILED (exit status 1): preflight: ToolMissing: {expected}\n" in (
        outcome.output
    )
    assert {s["name"]: s["outcome"] for s in doc["stages"]} == {
        "preflight": "failed",
        "dump": "skipped",
        "restore": "skipped",
        "verify": "skipped",
        "encryption key": "skipped",
        "artifact": "skipped",
    }
    assert (_state(pg15), _state(pg18)) == before  # no scratch database, no target database
    assert list(outcome.workdir.iterdir()) == []


def test_a_pg_dump_that_does_not_run_is_named(tmp_path: Path) -> None:
    """A pg_dump built for a newer C library than the host's (the project cache's builds on
    Debian 11) is reported with what it said, not as absent. The program is a test double: this
    host's C library runs every build it has."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    said = "pg_dump: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found"
    (bindir / "pg_dump").write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{said}\nEOF\nexit 1\n")
    (bindir / "pg_dump").chmod(0o755)
    with pytest.raises(errors.ToolMissing) as refused:
        pgtools.for_migration(15, 18, bindir)
    assert f"--pg-bindir {bindir}: pg_dump does not run ({said})" in str(refused.value)


def test_a_client_install_without_pg_restore_is_named(tmp_path: Path) -> None:
    """--method stream needs pg_restore beside pg_dump: an install without it is refused with
    the client package of its version."""
    real = pgtools.for_major(18).bindir
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for program in ("pg_dump", "psql"):
        (bindir / program).symlink_to(real / program)
    with pytest.raises(errors.ToolMissing) as refused:
        pgtools.for_migration(15, 18, bindir)
    assert str(refused.value).startswith(f"{bindir} has PostgreSQL 18.")
    assert str(refused.value).endswith(
        "but no pg_restore: install postgresql-client-18 (Debian/Ubuntu) or postgresql18 (RHEL, "
        "from PGDG), or pass --pg-bindir DIR"
    )


def test_a_client_only_install_cannot_run_the_rehearsals_servers(tmp_path: Path) -> None:
    """The rehearsal needs PostgreSQL's server programs too: a cache holding only the client
    programs of 18 names the server package."""
    real = pgtools.for_major(18).bindir
    bindir = tmp_path / "pg" / "18" / "bin"
    bindir.mkdir(parents=True)
    for program in pgtools.CLIENT:
        (bindir / program).symlink_to(real / program)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STACKBLITZ_MIGRATE_CACHE", str(tmp_path))
        with pytest.raises(errors.ToolMissing) as refused:
            pgtools.for_major(18)
    assert str(refused.value).startswith(f"{bindir} has PostgreSQL 18.")
    assert str(refused.value).endswith(
        "but no initdb, pg_ctl, postgres: install postgresql-18 (Debian/Ubuntu) or "
        "postgresql18-server (RHEL, from PGDG); in a checkout, scripts/setup puts them in the "
        "project cache"
    )


def test_rehearsal_without_server_programs_is_not_done(tmp_path: Path) -> None:
    """An empty project cache (and no PostgreSQL 18 from the distribution): the rehearsal cannot
    start, says where it looked and what to install, and the run is "not done" (6)."""
    if list(Path("/").glob("usr/lib/postgresql/18/bin")) or list(Path("/").glob("usr/pgsql-18")):
        pytest.skip("this host has PostgreSQL 18 from its distribution")
    cache = tmp_path / "cache"
    cache.mkdir()
    outcome = run_runbook(tmp_path, "--rehearsal", env={"STACKBLITZ_MIGRATE_CACHE": str(cache)})
    assert outcome.code == 6, outcome.output[-3000:]
    reason = outcome.evidence["outcome"]["reason"]
    assert "the rehearsal cannot start here: PostgreSQL 18's server programs are not on this " in (
        reason
    )
    assert f"the project cache {cache}/pg/N/bin: none" in reason
    assert "install postgresql-18 (Debian/Ubuntu) or postgresql18-server (RHEL, from PGDG)" in (
        reason
    )


def test_hidden_postgresql_programs_are_not_found() -> None:
    """What the Kubernetes-mode migration test runs under (tests.runbook_cli.hidden): no
    PostgreSQL program can be found there, so that test proves the mode needs none here."""
    probe = (
        "from checks import pgtools; "
        "print(len(pgtools.installed()), pgtools.looked_in(pgtools.search()))"
    )
    argv = hidden(postgresql_program_dirs(), [sys.executable, "-c", probe])
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.startswith("0 "), done.stdout


def test_preflight_records_what_direct_mode_found_and_where(
    source_db: None, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """--pg-bindir is the only place looked in, and the evidence says what was found there."""
    real = pgtools.for_major(18).bindir
    outcome = run_runbook(
        tmp_path,
        *direct_args(pg15, pg18, tmp_path, database=DB),
        "--preflight-only",
        "--pg-bindir",
        str(real),
    )
    assert outcome.code == 0, outcome.output[-3000:]
    found = outcome.evidence["preflight"]["host_programs"]
    version = pgtools.for_major(18).version
    assert found == {
        "needs": "on this host: pg_dump, pg_restore, psql",
        "found": str(real),
        "looked_in": f"--pg-bindir {real}: PostgreSQL {version}",
    }
