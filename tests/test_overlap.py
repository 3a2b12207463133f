"""Verification overlapping the copy (checks/overlap.py) and --jobs, between real servers.

The early digests are taken while the copy runs; what changes after them must still fail the
run: a target table changed after its digest, a source written after the copy's snapshot. The
changes are made by a plugin of the runbook's own pytest run (tests/runbook_hooks.py) once the
early digests are done and before stage 4's final check, as another session would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import data, rowdigest
from fixtures import pgserver, sample_db
from tests.runbook_cli import Outcome, direct_args, run_runbook

DB = "sbm_overlap"
PLUGIN = ("-p", "tests.runbook_hooks")


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


def _drop(server: pgserver.Server) -> None:
    with _admin(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


@pytest.fixture(scope="module")
def source(pg15: pgserver.Server, pg18: pgserver.Server) -> Iterator[pgserver.Server]:
    """The sample database on 15, settled: every database on the server analyzed, so that
    autovacuum does not write during a run (a write anywhere on the server makes the final
    check digest the source again, which these tests tell apart)."""
    _drop(pg15)
    _drop(pg18)
    with _admin(pg15) as admin:
        sample_db.create_database(admin, DB)
    with _admin(pg15, DB) as conn:
        sample_db.seed(conn, scale=1)
    with _admin(pg15) as admin:
        names = admin.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()
    for (name,) in names:
        with _admin(pg15, name) as conn:
            conn.execute("VACUUM ANALYZE")
    yield pg15
    _drop(pg15)
    _drop(pg18)


def _migrate(
    source: pgserver.Server,
    target: pgserver.Server,
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> Outcome:
    _drop(target)
    tmp.mkdir(exist_ok=True)
    return run_runbook(
        tmp,
        *direct_args(source, target, tmp, database=DB, key=False),
        *("--no-key", "--verify-during-copy", *args),
        env=env,
    )


def _target_data(target: pgserver.Server) -> data.Snapshot:
    with _admin(target, DB) as conn:
        return data.snapshot(conn, row_digest=rowdigest.FAST)


def test_jobs_1_and_n_give_the_same_verified_result(
    source: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """--jobs 1 streams the parts one at a time, --jobs 8 at once (and gives more tables a
    stream of their own); both verify, mostly while copying, and copy the same data."""
    copies, parts = [], []
    for jobs in (1, 8):
        outcome = _migrate(source, pg18, tmp_path / f"jobs{jobs}", "--jobs", str(jobs))
        assert outcome.code == 0, outcome.output[-3000:]
        doc = outcome.evidence
        assert doc["verified"] is True
        found = doc["verification"]
        assert found["source"]["snapshot_still_current"] is True, found
        early = found["target"]["tables_digested_during_copy"]
        assert early == len(doc["tables"]) and found["target"]["tables_reconfirmed"] == early
        assert found["target"]["changed_since_digest"] == []
        assert found["digest_seconds_during_copy"] > 0
        parts.append(sorted(doc["dump"]["sha256"]))
        copies.append(_target_data(pg18))
        with _admin(pg18, DB) as conn:  # stage 3's ANALYZE, --jobs tables at a time
            unanalyzed = conn.execute(
                "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NULL"
            ).fetchall()
        assert unanalyzed == []
    assert data.compare(copies[0], copies[1]).equal
    with _admin(source, DB) as conn:
        assert data.compare(data.snapshot(conn, row_digest=rowdigest.FAST), copies[1]).equal
    assert "2-data-project_files.dump" in parts[0] and "2-data.dump" in parts[0]
    assert len(parts[1]) > len(parts[0]), parts  # 1/(2 jobs) of the data streams alone


def test_verification_follows_the_copy_unless_asked(
    source: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """Without --verify-during-copy nothing is digested while the data copies (it measured
    slower on a host running both servers): stage 4 digests both sides after the copy."""
    _drop(pg18)
    outcome = run_runbook(
        tmp_path, *direct_args(source, pg18, tmp_path, database=DB, key=False), "--no-key"
    )
    assert outcome.code == 0, outcome.output[-3000:]
    assert outcome.evidence["verified"] is True
    assert outcome.evidence["verification"] is None


# Each changes the target after its table's early digest; the final check must find it.
TARGET_CHANGES = {
    "row deleted": (
        "DELETE FROM memberships WHERE ctid = (SELECT min(ctid) FROM memberships)",
        "public.memberships",
    ),
    "one bytea byte flipped, the table streamed alone": (
        "UPDATE project_files SET content = set_byte(content, 0, 255 - get_byte(content, 0)) "
        "WHERE id = (SELECT min(id) FROM project_files WHERE octet_length(content) > 0)",
        "public.project_files",
    ),
    "value in a table without primary key": (
        "UPDATE audit_log_raw SET action = action || 'x' WHERE ctid = "
        "(SELECT min(ctid) FROM audit_log_raw)",
        "public.audit_log_raw",
    ),
    "row replaced by another, the count unchanged": (
        "WITH gone AS (DELETE FROM schema_migrations WHERE version = "
        "(SELECT min(version) FROM schema_migrations) RETURNING version) "
        "INSERT INTO schema_migrations SELECT version || '0' FROM gone",
        "public.schema_migrations",
    ),
    "large object changed": (
        "SELECT lo_put((SELECT min(oid) FROM pg_largeobject_metadata), 0, '\\xff'::bytea)",
        "large object ",
    ),
}


@pytest.mark.parametrize("change", list(TARGET_CHANGES))
def test_a_target_change_after_the_early_digest_fails_the_run(
    change: str, source: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    statement, named = TARGET_CHANGES[change]
    outcome = _migrate(source, pg18, tmp_path, *PLUGIN, env={"SBM_TEST_TAMPER_TARGET": statement})
    assert outcome.code == 1, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["verified"] is False
    assert any(named in d for d in doc["data_differences"]), doc["data_differences"]
    assert [s["name"] for s in doc["stages"] if s["outcome"] == "failed"] == ["verify"]
    if named.startswith("public."):
        assert doc["verification"]["target"]["changed_since_digest"] == [named]


def test_the_same_values_written_again_still_verify(
    source: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """A row rewritten with its own values is a new row version: the final check cannot
    confirm the early digest, digests the table again, and finds it equal."""
    statement = "UPDATE projects SET name = name WHERE id = (SELECT min(id) FROM projects)"
    outcome = _migrate(source, pg18, tmp_path, *PLUGIN, env={"SBM_TEST_TAMPER_TARGET": statement})
    assert outcome.code == 0, outcome.output[-3000:]
    assert outcome.evidence["verification"]["target"]["changed_since_digest"] == ["public.projects"]


def test_a_source_write_after_the_snapshot_fails_the_run(
    source: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """StackBlitz still writing during the copy: the copy holds the snapshot's rows, the source
    has moved on; the final check sees the server's transactions moved, digests the source
    again and names the table, as verification after the copy did."""
    added = "29990101000000"
    statement = f"INSERT INTO schema_migrations VALUES ('{added}')"
    try:
        outcome = _migrate(
            source, pg18, tmp_path, *PLUGIN, env={"SBM_TEST_TAMPER_SOURCE": statement}
        )
    finally:
        with _admin(source, DB) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (added,))
    assert outcome.code == 1, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["verification"]["source"]["snapshot_still_current"] is False
    assert "changed since the copy's snapshot" in doc["verification"]["source"]["digested_again"]
    assert any("public.schema_migrations" in d for d in doc["data_differences"])


def test_the_early_digests_do_not_depend_on_session_settings(
    source: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """Settings that change how values print, one way for the source database and another for
    the target's user: the early digests fix them as verification always did, so the two sides
    still agree."""
    on_source = {"DateStyle": "SQL, DMY", "TimeZone": "Asia/Kathmandu", "bytea_output": "escape"}
    on_target = {"DateStyle": "German", "TimeZone": "America/St_Johns", "extra_float_digits": "-3"}
    on_target["IntervalStyle"] = "sql_standard"

    def alter(server: pgserver.Server, what: sql.Composable, settings: dict[str, str]) -> None:
        with _admin(server) as conn:
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER {} SET {} = {}").format(
                        what, sql.Identifier(name), sql.Literal(value)
                    )
                )

    alter(source, sql.SQL("DATABASE {}").format(sql.Identifier(DB)), on_source)
    alter(pg18, sql.SQL("ROLE {}").format(sql.Identifier(pg18.user)), on_target)
    try:
        outcome = _migrate(source, pg18, tmp_path)
    finally:
        with _admin(source) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(sql.Identifier(DB)))
        with _admin(pg18) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(pg18.user)))
    assert outcome.code == 0, outcome.output[-3000:]
    found = outcome.evidence["verification"]
    assert found["source"]["snapshot_still_current"] is True
    assert found["target"]["tables_reconfirmed"] == len(outcome.evidence["tables"])
