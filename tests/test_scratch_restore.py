"""Preflight's extension rights and scratch restore on real servers, with a target user that is
no superuser (CREATEDB only, as a managed service gives): refusals happen in preflight and leave
nothing on the target, and a scratch database a killed run could not drop is dropped by the next
run's preflight."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import errors, scratch, server
from checks.direct import DirectSource
from checks.endpoint import Endpoint
from fixtures import pgserver
from tests.runbook_cli import REPO, direct_args, run_runbook

DB = "sbm_scratch_source"
LIMITED = "sbm_createdb_only"
LIMITED_PW = "createdb-only-Pw1"
STAMP = "20261130T120000Z"


def _admin(s: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**s.connect_kwargs(dbname), autocommit=True)


def _databases(s: pgserver.Server) -> list[str]:
    with _admin(s) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


def _scratches(s: pgserver.Server) -> list[str]:
    return [d for d in _databases(s) if d.startswith(scratch.PREFIX)]


def _drop(s: pgserver.Server, name: str) -> None:
    with _admin(s) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _limited_user(s: pgserver.Server) -> pgserver.Server:
    """A login with CREATEDB and nothing else on `s` (dropped, with its databases, first)."""
    _drop_limited_user(s)
    with _admin(s) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(LIMITED), sql.Literal(LIMITED_PW)
            )
        )
    return pgserver.Server(s.host, s.port, LIMITED, LIMITED_PW, s.major)


def _drop_limited_user(s: pgserver.Server) -> None:
    with _admin(s) as conn:
        owned = conn.execute(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
            "WHERE r.rolname = %s",
            (LIMITED,),
        ).fetchall()
    for (name,) in owned:
        _drop(s, name)
    with _admin(s) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(LIMITED)))


@pytest.fixture
def limited(pg18: pgserver.Server) -> Iterator[pgserver.Server]:
    yield _limited_user(pg18)
    _drop_limited_user(pg18)


@pytest.fixture
def source_db(pg15: pgserver.Server) -> Iterator[Callable[[str], None]]:
    """Creates DB on the 15 source with the given SQL run in it; dropped afterwards."""

    def create(setup: str) -> None:
        _drop(pg15, DB)
        with _admin(pg15) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
        with _admin(pg15, DB) as conn:
            conn.execute(setup)

    yield create
    _drop(pg15, DB)


EXTENSIONS = "test_target_user_may_create_source_extensions"
RESTORES = "test_schema_restores_on_target"


def test_untrusted_extension_is_refused_in_preflight(
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    limited: pgserver.Server,
    source_db: Callable[[str], None],
    tmp_path: Path,
) -> None:
    """pgstattuple is not trusted: a CREATEDB user cannot create it, citext (trusted) it can."""
    source_db("CREATE EXTENSION pgstattuple; CREATE EXTENSION citext; CREATE TABLE t (x citext)")
    before = _databases(pg18)
    outcome = run_runbook(tmp_path, *direct_args(pg15, limited, tmp_path, database=DB))
    assert outcome.code == 1, outcome.output[-3000:]
    refused = outcome.check(EXTENSIONS)
    assert refused["outcome"] == "failed"
    assert (
        f"the target user {LIMITED} may not create 1 extension(s) the source uses: "
        "pgstattuple (not trusted: only a superuser may create it)"
    ) in refused["message"]
    assert "citext" not in refused["message"]
    # nothing else is tried on the target once a catalog check refuses
    skipped = outcome.check(RESTORES)
    assert skipped["outcome"] == "skipped" and EXTENSIONS in skipped["message"]
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages["dump"]["outcome"] == "skipped"
    assert outcome.evidence["preflight"]["target_extension_rights"] == (
        "not a superuser: trusted extensions only (in the databases it creates)"
    )
    assert _databases(pg18) == before
    assert not list(outcome.workdir.iterdir())


def test_scratch_restore_names_the_object_the_target_refuses(
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    limited: pgserver.Server,
    source_db: Callable[[str], None],
    tmp_path: Path,
) -> None:
    """The scratch restore on its own (as it runs when the catalog check lets an extension
    through, see the RDS test below): its first error is the refusal, and it drops its
    database."""
    source_db("CREATE EXTENSION citext; CREATE EXTENSION pgstattuple; CREATE TABLE t (x citext)")
    source = DirectSource(Endpoint.from_dsn("source", pg15.dsn(DB), pg15.password))
    source.tools(source_major=15, target_major=18)
    target = Endpoint(
        "target", {"host": limited.host, "port": str(limited.port), "user": LIMITED}, LIMITED_PW
    )
    with source.connect() as conn:
        db = server.database(conn, DB)
    assert db is not None
    before = _databases(pg18)
    with pytest.raises(errors.Refused) as refused:
        scratch.restore_schema(source, target, db, stamp=STAMP, target_major=18, workdir=tmp_path)
    message = str(refused.value)
    log = tmp_path / f"{scratch.name_for(STAMP)}.log"
    assert message == (
        f"the source's schema does not restore on the target as {LIMITED}: permission denied "
        'to create extension "pgstattuple" (Must be superuser to create this extension.) at '
        "`CREATE EXTENSION IF NOT EXISTS pgstattuple WITH SCHEMA public;`; have the extension "
        "allow-listed on the target (rds.allowed_extensions, azure.extensions) or use a user "
        "that may create it (the managed server's admin user) "
        f"(full log: {log}); the scratch database {scratch.name_for(STAMP)} was dropped"
    )
    assert log.stat().st_mode & 0o777 == 0o600
    assert _databases(pg18) == before


def test_trusted_extensions_migrate_with_a_createdb_user(
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    limited: pgserver.Server,
    source_db: Callable[[str], None],
    tmp_path: Path,
) -> None:
    """citext, pgcrypto and hstore are trusted: preflight's scratch restore and then the whole
    migration pass with a target user that may only create databases."""
    source_db(
        "CREATE EXTENSION citext; CREATE EXTENSION pgcrypto; CREATE EXTENSION hstore; "
        "CREATE TABLE users (id bigserial PRIMARY KEY, email citext UNIQUE, prefs hstore, "
        "token bytea DEFAULT gen_random_bytes(16)); "
        "INSERT INTO users (email, prefs) SELECT 'u' || i || '@example.com', 'a=>1' "
        "FROM generate_series(1, 100) i; "
        "CREATE MATERIALIZED VIEW user_count AS SELECT count(*) FROM users"
    )
    before = _databases(pg18)
    outcome = run_runbook(tmp_path, *direct_args(pg15, limited, tmp_path, database=DB))
    assert outcome.code == 0, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["verified"] is True
    done = doc["preflight"]["scratch_restore"]
    assert done["database"].startswith(scratch.PREFIX) and done["dropped"] is True
    # the tables, sequence, indexes, extensions, materialized view... as verify counts them
    assert done["objects"] >= 8 and done["seconds"] > 0
    assert doc["preflight"]["scratch_leftovers"] == "none"
    assert _databases(pg18) == sorted([*before, DB])
    with _admin(pg18) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (DB,)
        ).fetchone()
    assert owner == (LIMITED,)


def test_managed_allow_list_and_admin_role_are_read_from_the_target(
    pg15: pgserver.Server, source_db: Callable[[str], None], tmp_path: Path
) -> None:
    """A vanilla server dressed as RDS: the rds_superuser role and rds.allowed_extensions (a
    custom setting a real server accepts). A member of rds_superuser may create the untrusted
    pgstattuple, but only what the allow-list names; when the list names everything, the
    catalog check passes and the scratch restore finds out that this rds_superuser is no real
    one: the refusal still comes in preflight."""
    source_db(
        "CREATE EXTENSION citext; CREATE EXTENSION pgcrypto; CREATE EXTENSION pgstattuple; "
        "CREATE TABLE t (x citext)"
    )
    settings = {"rds.allowed_extensions": "'citext, pgstattuple'"}
    with pgserver.running_server(18, settings=settings) as target:
        user = _limited_user(target)
        with _admin(target) as conn:
            conn.execute("CREATE ROLE rds_superuser NOLOGIN")
            conn.execute(sql.SQL("GRANT rds_superuser TO {}").format(sql.Identifier(LIMITED)))
        before = _databases(target)
        listed = run_runbook(tmp_path / "a", *direct_args(pg15, user, tmp_path, database=DB))
        assert listed.code == 1, listed.output[-3000:]
        assert (
            f"the target user {LIMITED} may not create 1 extension(s) the source uses: pgcrypto "
            "(not in the target's rds.allowed_extensions); have them installed and allow-listed"
        ) in listed.check(EXTENSIONS)["message"]
        assert listed.evidence["preflight"]["target_extension_rights"] == (
            "Amazon RDS; member of rds_superuser; rds.allowed_extensions: citext, pgstattuple"
        )
        with _admin(target) as conn:  # read at run time, not at start
            conn.execute("ALTER SYSTEM SET rds.allowed_extensions = '*'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        everything = run_runbook(tmp_path / "b", *direct_args(pg15, user, tmp_path, database=DB))
        assert everything.code == 1, everything.output[-3000:]
        assert everything.check(EXTENSIONS)["outcome"] == "passed"
        message = everything.check(RESTORES)["message"]
        assert 'permission denied to create extension "pgstattuple"' in message, message
        assert "was dropped" in message
        assert _databases(target) == before


@pytest.fixture(scope="module")
def german_locale() -> Iterator[Path]:
    """A compiled de_DE.UTF-8 locale that only a server started with LOCPATH sees (this
    machine's glibc has C and C.UTF-8 only). Not under pytest's tmp_path: the server runs as an
    unprivileged user, who cannot enter root's private temporary directories."""
    where = Path(tempfile.mkdtemp(prefix="sbm-locales-"))
    where.chmod(0o755)
    done = subprocess.run(
        ["localedef", "-i", "de_DE", "-f", "UTF-8", str(where / "de_DE.UTF-8")],
        capture_output=True,
        text=True,
        check=False,
    )
    if not (where / "de_DE.UTF-8").is_dir():
        pytest.fail(f"localedef could not build de_DE.UTF-8: {done.stderr[-500:]}")
    for path in where.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield where
    shutil.rmtree(where)


def test_collation_only_the_source_has_is_refused(
    pg18: pgserver.Server, german_locale: Path, tmp_path: Path
) -> None:
    """A libc collation whose locale the source's OS has and the target's lacks: no catalog
    check looks at it; the scratch restore is refused at CREATE COLLATION."""
    with pgserver.running_server(15, env={"LOCPATH": str(german_locale)}) as source:
        with _admin(source) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with _admin(source, DB) as conn:
            conn.execute(
                "CREATE COLLATION german (provider = libc, locale = 'de_DE.UTF-8'); "
                "CREATE TABLE names (n text COLLATE german); CREATE INDEX ON names (n)"
            )
        before = _databases(pg18)
        outcome = run_runbook(
            tmp_path, *direct_args(source, pg18, tmp_path, database=DB), "--preflight-only"
        )
    assert outcome.code == 1, outcome.output[-3000:]
    message = outcome.check(RESTORES)["message"]
    assert message.startswith(
        "Refused: the source's schema does not restore on the target as postgres: could not create "
        'locale "de_DE.UTF-8"'
    ), message
    assert "CREATE COLLATION public.german" in message
    assert "the target lacks this collation's locale or provider" in message
    assert message.endswith("was dropped")
    assert _databases(pg18) == before
    (log,) = outcome.workdir.glob(f"{scratch.PREFIX}*.log")  # named in the message, kept
    assert str(log) in message


def _start_runbook(tmp: Path, *args: str) -> subprocess.Popen[str]:
    """run_runbook's command, left running in its own process group (a terminal's job)."""
    workdir, reports = tmp / "work", tmp / "reports"
    workdir.mkdir(parents=True, exist_ok=True)
    where = ["--workdir", str(workdir), "--reports-dir", str(reports)]
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "runbook/", *where, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _until(what: Callable[[], object], proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"never got there: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)


def _pg_dump_waiting(s: pgserver.Server) -> bool:
    with _admin(s) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def _processes_in_group(pgid: int) -> list[str]:
    """What still runs in the job's process group (/proc/PID/stat's fifth field)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == pgid:
            found.append(stat.parent.name)
    return found


@pytest.fixture
def locked_source(
    pg15: pgserver.Server, source_db: Callable[[str], None]
) -> Iterator[Callable[[], None]]:
    """The source database with a table locked by another session: the scratch restore's
    pg_dump waits for it, with the scratch database created, until the lock is released (the
    function yielded)."""
    source_db("CREATE TABLE t (x int); CREATE TABLE u (y int)")
    holder = psycopg.connect(**pg15.connect_kwargs(DB))
    holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    yield holder.rollback
    holder.close()


def test_interrupted_scratch_restore_drops_its_database(
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    locked_source: Callable[[], None],
    tmp_path: Path,
) -> None:
    """SIGINT to the runbook alone (not to its pg_dump, which a terminal's Ctrl-C would stop
    too) during the scratch restore: the database is dropped, pg_dump and pg_restore are
    stopped by the runbook, and the evidence is written."""
    args = (*direct_args(pg15, pg18, tmp_path, database=DB), "--preflight-only")
    proc = _start_runbook(tmp_path, *args, "--allow-active-connections")
    _until(lambda: _scratches(pg18) and _pg_dump_waiting(pg15), proc)
    (name,) = _scratches(pg18)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]  # SIGINT's status (fixtures.faults)
    assert _scratches(pg18) == [], output[-3000:]
    assert _processes_in_group(proc.pid) == []
    doc = json.loads((tmp_path / "reports" / "evidence.json").read_text())
    assert doc["preflight"]["scratch_restore"] == {
        "interrupted": "SIGINT",
        "cleanup": f"the scratch database {name} was dropped",
    }
    assert not list((tmp_path / "work").iterdir())


def test_scratch_database_of_a_killed_run_is_dropped_by_the_next(
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    locked_source: Callable[[], None],
    tmp_path: Path,
) -> None:
    """SIGKILL to the whole job (a lost terminal, the OOM killer) leaves the scratch database:
    the next run's preflight recognises it by its name and drops it, and says so."""
    # --allow-active-connections: the session holding the lock
    args = (*direct_args(pg15, pg18, tmp_path, database=DB), "--preflight-only")
    args = (*args, "--allow-active-connections")
    proc = _start_runbook(tmp_path / "killed", *args)
    _until(lambda: _scratches(pg18) and _pg_dump_waiting(pg15), proc)
    (left,) = _scratches(pg18)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _scratches(pg18) == [left]
    locked_source()  # the lock released: the killed pg_dump's session goes too
    before = _databases(pg18)
    time.sleep(1.1)  # a new stamp (whole seconds): the next run's scratch has another name
    outcome = run_runbook(tmp_path / "next", *args)
    assert outcome.code == 0, outcome.output[-3000:]
    assert outcome.evidence["preflight"]["scratch_leftovers"] == [
        f"{left}: left by an earlier run, dropped"
    ]
    assert outcome.evidence["preflight"]["scratch_restore"]["database"] != left
    assert _databases(pg18) == [d for d in before if d != left]


def test_leftover_in_use_is_reported_not_cut_off(pg18: pgserver.Server) -> None:
    """Another run's scratch database (someone connected) is left alone and named; an idle one
    is dropped; a database that only looks similar is never touched."""
    idle, busy = scratch.name_for("20250101T000000Z"), scratch.name_for("20250101T000001Z")
    other = scratch.PREFIX + "mine"
    for name in (idle, busy, other):
        _drop(pg18, name)
        with _admin(pg18) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = {"host": pg18.host, "port": str(pg18.port), "user": pg18.user}
    target = Endpoint("target", params, pg18.password)
    try:
        with _admin(pg18, busy), pytest.raises(errors.Refused) as refused:
            scratch.drop_leftovers(target)
        assert f"could not be dropped: {busy} (database" in str(refused.value)
        assert "is being accessed by other users" in str(refused.value)
        assert _scratches(pg18) == sorted([busy, other])
        assert scratch.drop_leftovers(target) == [f"{busy}: left by an earlier run, dropped"]
        assert _scratches(pg18) == [other]
    finally:
        for name in (idle, busy, other):
            _drop(pg18, name)
