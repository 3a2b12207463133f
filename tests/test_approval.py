"""--preflight-evidence: the migration belongs to the preflight-only run the change was approved
on, and refuses when the facts that approval rested on changed (real servers, both runs real)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fixtures import pgserver
from tests.runbook_cli import Outcome, direct_args, run_runbook, verdict_box

DB = "sbm_approval"
CHECK = "test_facts_match_the_approved_preflight"


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


@pytest.fixture
def approved(pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path) -> Iterator[Outcome]:
    """A small source database and the passed --preflight-only run approved for CHG-9."""
    for server in (pg15, pg18):
        with _admin(server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    with _admin(pg15) as conn:
        conn.execute(f"CREATE DATABASE {DB}")
    with _admin(pg15, DB) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100) i")
    args = direct_args(pg15, pg18, tmp_path, database=DB)
    run = run_runbook(tmp_path / "preflight", *args, "--preflight-only", "--change-id", "CHG-9")
    assert run.code == 0, run.output[-3000:]
    yield run
    for server in (pg15, pg18):
        with _admin(server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _migrate(
    approved: Outcome, source: pgserver.Server, target: pgserver.Server, tmp: Path
) -> Outcome:
    tmp.mkdir(parents=True, exist_ok=True)
    args = direct_args(source, target, tmp, database=DB)
    return run_runbook(tmp, *args, "--preflight-evidence", str(approved.reports))


def test_the_migration_links_the_approved_preflight(
    approved: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    run = _migrate(approved, pg15, pg18, tmp_path / "migrate")
    assert run.code == 0, run.output[-3000:]
    assert run.check(CHECK)["outcome"] == "passed"
    linked = run.evidence["approved_preflight"]
    assert linked["path"] == str(approved.reports.resolve()) and linked["change_id"] == "CHG-9"
    box = verdict_box(run.reports / "report.html")
    assert f"approved preflight {approved.reports.resolve()}" in box
    assert (approved.reports / "report.html").resolve().as_uri() in (
        run.reports / "report.html"
    ).read_text()


def test_changed_facts_are_refused_each_named(
    approved: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    with _admin(pg15, DB) as conn:
        conn.execute("CREATE EXTENSION citext")
        conn.execute(
            "INSERT INTO t SELECT i, repeat(md5(i::text), 8) FROM generate_series(101, 40000) i"
        )
    with pgserver.running_server(18) as other:  # a different target than the one approved
        run = _migrate(approved, pg15, other, tmp_path / "migrate")
        with _admin(other) as conn:
            absent = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (DB,))
            assert absent.fetchone() == (0,)  # refused before anything changed
    assert run.code == 1, run.output[-3000:]
    message = run.check(CHECK)["message"]
    assert "the facts the approved preflight" in message
    for changed in (
        "target server was system",
        "the database grew",
        "new extension(s) on the source: citext",
    ):
        assert changed in message, message
    assert "run --preflight-only again" in message
    # refused before the (slower) scratch restore of the schema was tried
    assert run.check("test_schema_restores_on_target")["outcome"] == "skipped"


def test_edited_preflight_evidence_is_refused(
    approved: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    evidence = approved.reports / "evidence.json"
    doc = json.loads(evidence.read_text())
    doc["preflight"]["source_database"]["size_bytes"] *= 100  # room for a bigger database
    evidence.write_text(json.dumps(doc))
    run = _migrate(approved, pg15, pg18, tmp_path / "migrate")
    assert run.code == 1, run.output[-3000:]
    assert "evidence.json is not the file that run wrote" in run.check(CHECK)["message"]
