"""Direct-mode migrations between real servers: verified, tamper-evident, refused when unsafe."""

from __future__ import annotations

import gzip
import hashlib
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import data, pgtools, rowdigest, schema
from fixtures import pgserver, sample_db
from fixtures.kots_sample import kots_config_values
from tests.runbook_cli import Outcome, direct_args, password_file, run_runbook

DB = sample_db.DATABASE
PRISTINE = "sbm_test_pristine"
KEY = "k3y-" + "Zq9" * 10


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


def _drop(server: pgserver.Server, name: str) -> None:
    with _admin(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _target_state(server: pgserver.Server) -> dict[str, object]:
    """Every database on the server with its schema and data: to prove nothing was touched."""
    with _admin(server) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"
            )
        ]
    state: dict[str, object] = {"databases": names}
    for name in names:
        with _admin(server, name) as conn:
            state[name] = (schema.snapshot(conn), data.snapshot(conn, row_digest=rowdigest.FAST))
    return state


@pytest.fixture(scope="module")
def migrated(
    pg15: pgserver.Server, pg18: pgserver.Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """A seeded 15 source migrated into 18; a pristine copy of the result is kept on 18."""
    for server in (pg15, pg18):
        _drop(server, DB)
    _drop(pg18, PRISTINE)
    with _admin(pg15) as admin:
        sample_db.create_database(admin, DB)
    with _admin(pg15, DB) as conn:
        sample_db.seed(conn, scale=1)
    tmp = tmp_path_factory.mktemp("migrated")
    kots = password_file(tmp, "kots.yaml", kots_config_values(KEY))
    outcome = run_runbook(
        tmp,
        *direct_args(pg15, pg18, tmp, database=DB),
        "--kots-config-file",
        str(kots),
        "--key-out",
        str(tmp / "key"),
    )
    with _admin(pg18) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(PRISTINE), sql.Identifier(DB)
            )
        )
    yield outcome
    for server in (pg15, pg18):
        _drop(server, DB)
    _drop(pg18, PRISTINE)


def _reset_target(pg18: pgserver.Server) -> None:
    _drop(pg18, DB)
    with _admin(pg18) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(DB), sql.Identifier(PRISTINE)
            )
        )


def test_migration_is_verified(migrated: Outcome) -> None:
    assert migrated.code == 0, migrated.output[-3000:]
    doc = migrated.evidence
    assert doc["verified"] is True
    assert doc["tools"]["pg_dump"].startswith("18.")
    # --method stream: a directory of pg_dump custom archives, dumped again after verification
    # (stage 6) from the snapshot the copy read: the same archives, byte count for byte count
    assert doc["dump"]["method"] == "stream" and doc["dump"]["seconds"] > 0
    assert doc["dump"]["written"] is True and doc["dump"]["snapshot"] == "the copy's own snapshot"
    assert doc["dump"]["streamed_bytes"] == doc["dump"]["bytes"]
    artifact = Path(doc["dump"]["path"])
    assert artifact.is_dir() and artifact.stat().st_mode & 0o777 == 0o700
    names = sorted(p.name for p in artifact.iterdir())
    assert names == [
        "1-pre-data.dump",
        "2-data-project_files.dump",  # the largest table streams on its own
        "2-data.dump",
        "3-post-data.dump",
        "SHA256SUMS",
    ]
    assert all((artifact / n).stat().st_mode & 0o777 == 0o600 for n in names)
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=artifact, capture_output=True, text=True
    )
    assert sums.returncode == 0 and sums.stdout.count(": OK") == 4, sums.stdout
    assert doc["dump"]["sha256"] == {
        n: hashlib.sha256((artifact / n).read_bytes()).hexdigest() for n in names[:4]
    }
    assert doc["dump"]["bytes"] == sum((artifact / n).stat().st_size for n in names[:4])

    def listing(name: str) -> str:
        return subprocess.run(
            [pgtools.for_major(18).path("pg_restore"), "-l", str(artifact / name)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert "TABLE public project_files" in listing("1-pre-data.dump")
    alone, rest = listing("2-data-project_files.dump"), listing("2-data.dump")
    assert "TABLE DATA public project_files" in alone and "BLOBS" not in alone
    assert "TABLE DATA public project_files" not in rest and "BLOBS" in rest
    assert "TABLE DATA public events_2024_01" in rest
    assert "CONSTRAINT public project_files project_files_pkey" in listing("3-post-data.dump")
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["restore"]["outcome"] == "passed"  # its checks and ANALYZE ran
    assert doc["encryption_key"]["item"] == "stackblitz_enc_key"
    assert doc["preflight"]["target_database"] == "absent"
    # 15 to 18 with PostgreSQL's own hash: both majors gave the same hash of the probe row.
    assert doc["row_digest"]["digest"] == "hashtextextended", doc["row_digest"]


def test_artifact_restores_by_hand_to_the_same_data(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server
) -> None:
    """The evidence's own restore commands, run in order against an empty target, give back
    the source's data: the artifact is a whole dump, not just a record of one."""
    _drop(pg18, DB)
    env = {**os.environ, "PGHOST": pg18.host, "PGPORT": str(pg18.port), "PGUSER": pg18.user}
    env["PGPASSWORD"] = pg18.password
    bindir = pgtools.for_major(18).bindir
    for command in migrated.evidence["dump"]["restore_with"]:
        argv = shlex.split(command)
        subprocess.run([str(bindir / argv[0]), *argv[1:]], env=env, check=True)
    with _admin(pg15, DB) as src, _admin(pg18, DB) as dst:
        fast = rowdigest.FAST
        assert data.compare(
            data.snapshot(src, row_digest=fast), data.snapshot(dst, row_digest=fast)
        ).equal
    _reset_target(pg18)


def test_no_secret_in_any_artifact(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server
) -> None:
    secrets = [pg15.password.encode(), pg18.password.encode(), KEY.encode()]
    written = [
        p for p in (*migrated.reports.rglob("*"), *migrated.workdir.rglob("*")) if p.is_file()
    ]
    assert any(p.name == "report.html" for p in written)
    for path in written:
        content = path.read_bytes()
        assert not any(s in content for s in secrets), f"a secret is in {path}"
    assert not any(s.decode() in migrated.output for s in secrets)
    dump = Path(migrated.evidence["dump"]["path"])
    assert dump.stat().st_mode & 0o777 == 0o700  # a private directory of 0600 parts
    key_file = migrated.workdir.parent / "key"
    assert key_file.read_text() == KEY + "\n" and key_file.stat().st_mode & 0o777 == 0o600


TAMPERS = {
    "row deleted": (
        "DELETE FROM users WHERE id = (SELECT max(id) FROM users WHERE NOT EXISTS "
        "(SELECT 1 FROM projects WHERE owner_id = users.id))",
        "public.users: ",
    ),
    "one bytea byte flipped": (
        "UPDATE project_files SET content = set_byte(content, 0, 255 - get_byte(content, 0)) "
        "WHERE id = (SELECT min(id) FROM project_files WHERE octet_length(content) > 0)",
        "public.project_files: same row count, different content",
    ),
    "value in a table without primary key": (
        "UPDATE audit_log_raw SET action = action || 'x' WHERE ctid = "
        "(SELECT min(ctid) FROM audit_log_raw)",
        "public.audit_log_raw: same row count, different content",
    ),
    "row in a partition": (
        "UPDATE events_default SET payload = payload || '{\"t\": 1}' WHERE ctid = "
        "(SELECT min(ctid) FROM events_default)",
        "public.events_default: same row count, different content",
    ),
    "timestamp moved by a microsecond": (
        "UPDATE projects SET created_at = created_at + interval '1 microsecond' "
        "WHERE id = (SELECT min(id) FROM projects)",
        "public.projects: same row count, different content",
    ),
    "materialized view emptied": (
        "TRUNCATE project_files CASCADE; REFRESH MATERIALIZED VIEW project_file_stats",
        "public.project_file_stats: ",
    ),
    "sequence moved": (
        "SELECT setval('project_number_seq', nextval('project_number_seq') + 100)",
        "sequence public.project_number_seq",
    ),
    "large object changed": (
        "SELECT lo_put((SELECT min(oid) FROM pg_largeobject_metadata), 0, '\\xff'::bytea)",
        "large object ",
    ),
    "large object removed": (
        "SELECT lo_unlink((SELECT max(oid) FROM pg_largeobject_metadata))",
        "missing on target",
    ),
    "index dropped": ("DROP INDEX index_projects_on_tags", "index_projects_on_tags"),
    "column default changed": (
        "ALTER TABLE projects ALTER COLUMN stars_count SET DEFAULT 1",
        "projects.stars_count",
    ),
    "table missing": ("DROP TABLE audit_log_raw", "audit_log_raw"),
}


# The changes only a table's content digest can see, tried with the MD5 row digest too.
CONTENT_TAMPERS = (
    "row deleted",
    "one bytea byte flipped",
    "value in a table without primary key",
    "row in a partition",
    "timestamp moved by a microsecond",
)


@pytest.mark.parametrize(
    ("tamper", "row_digest"),
    [(t, "hashtextextended") for t in TAMPERS] + [(t, "md5") for t in CONTENT_TAMPERS],
)
def test_verify_only_detects(
    tamper: str,
    row_digest: str,
    migrated: Outcome,
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    tmp_path: Path,
) -> None:
    """With the fast row digest (these servers agree on its probe) and, where the content
    digest is what finds it, with MD5: a target probe that disagrees is fed to the run
    (tests/runbook_hooks.py), as a big-endian server's would."""
    statement, expected = TAMPERS[tamper]
    _reset_target(pg18)
    with _admin(pg18, DB) as conn:
        conn.execute(statement)
    md5 = row_digest == "md5"
    outcome = run_runbook(
        tmp_path,
        *direct_args(pg15, pg18, tmp_path, database=DB),
        "--verify-only",
        *(("-p", "tests.runbook_hooks") if md5 else ()),
        env={"SBM_TEST_TARGET_PROBE": "1"} if md5 else None,
    )
    assert outcome.code == 1, outcome.output[-2000:]
    doc = outcome.evidence
    assert doc["verified"] is False
    assert doc["row_digest"]["digest"] == row_digest
    found = (doc["data_differences"] or []) + (doc["schema_differences"] or [])
    assert any(expected in d for d in found), found
    assert [s["name"] for s in doc["stages"] if s["outcome"] == "failed"] == ["verify"]


def test_verify_only_passes_on_an_untouched_copy_whatever_the_session_settings(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """Settings that change how values print must not change the digests."""
    _reset_target(pg18)
    with _admin(pg18) as conn:
        conn.execute(
            f"ALTER DATABASE {DB} SET DateStyle = 'SQL, DMY'; "
            f"ALTER DATABASE {DB} SET TimeZone = 'Asia/Kathmandu'; "
            f"ALTER DATABASE {DB} SET extra_float_digits = -3; "
            f"ALTER DATABASE {DB} SET bytea_output = 'escape'; "
            f"ALTER DATABASE {DB} SET IntervalStyle = 'sql_standard'"
        )
    outcome = run_runbook(
        tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB), "--verify-only"
    )
    assert outcome.code == 0, outcome.output[-2000:]
    assert outcome.evidence["verified"] is True
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages["verify"]["outcome"] == "passed"
    for changing in ("dump", "restore"):
        assert stages[changing]["outcome"] == "not applicable"
        assert stages[changing]["detail"] == "not part of a verify-only run"


def _dumps_kept(outcome: Outcome) -> list[Path]:
    """Dump files (whole or partial) in the workdir; the logs a failure leaves are not dumps."""
    found = [*outcome.workdir.glob("*.sql*"), *outcome.workdir.glob("*.dump*")]
    return [p for p in found if not p.name.endswith(".log")]


def _refused(outcome: Outcome, check: str, message: str) -> None:
    assert outcome.code == 1, outcome.output[-2000:]
    result = outcome.check(check)
    assert result["outcome"] == "failed" and message in result["message"], result
    assert "\n" not in result["message"]
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages["preflight"]["outcome"] == "failed"
    for later in ("dump", "restore", "verify"):
        assert stages[later]["outcome"] == "skipped"
        assert stages[later]["detail"] == "stage 'preflight' failed"
    assert "stage 'preflight' failed" in outcome.junit_skips()
    assert outcome.evidence["verified"] is False
    assert not list(outcome.workdir.iterdir())  # not even a log


def test_existing_target_database_is_refused_and_untouched(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    _reset_target(pg18)
    before = _target_state(pg18)
    outcome = run_runbook(tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB))
    _refused(outcome, "test_target_database_is_absent_or_may_be_dropped", "--allow-drop-target")
    assert _target_state(pg18) == before


def test_allow_drop_target_migrates_over_an_existing_database(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    _reset_target(pg18)
    with _admin(pg18, DB) as conn:
        conn.execute("CREATE TABLE leftover (x int)")
    outcome = run_runbook(
        tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB), "--allow-drop-target"
    )
    assert outcome.code == 0, outcome.output[-2000:]
    assert outcome.evidence["verified"] is True
    assert "dropped and recreated" in outcome.evidence["preflight"]["target_database"]


def test_a_failed_key_stage_still_writes_the_archive_of_the_verified_copy(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """No KOTS config: stage 5 fails, but stage 6 does not depend on it (fixtures/stages.py)."""
    outcome = run_runbook(
        tmp_path,
        *direct_args(pg15, pg18, tmp_path, database=DB, key=False),
        "--allow-drop-target",
    )
    assert outcome.code == 1, outcome.output[-2000:]
    doc = outcome.evidence
    stages = {s["name"]: s["outcome"] for s in doc["stages"]}
    assert stages["encryption key"] == "failed" and stages["artifact"] == "passed", stages
    assert doc["verified"] is True and doc["dump"]["written"] is True
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=doc["dump"]["path"], check=False)
    assert sums.returncode == 0
    _reset_target(pg18)


def test_same_server_is_refused(migrated: Outcome, pg15: pgserver.Server, tmp_path: Path) -> None:
    before = _target_state(pg15)
    outcome = run_runbook(tmp_path, *direct_args(pg15, pg15, tmp_path, database=DB))
    _refused(outcome, "test_source_and_target_are_different_servers", "same PostgreSQL server")
    assert _target_state(pg15) == before


def _refused_for_a_database(
    source: pgserver.Server,
    target: pgserver.Server,
    tmp_path: Path,
    *,
    setup: str,
    check: str,
    message: str,
) -> None:
    """A fresh source database made by `setup` is refused by `check`; the target is untouched."""
    name = "sbm_test_refusal"
    _drop(source, name)
    with _admin(source) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with _admin(source, name) as conn:
        conn.execute(setup)
    try:
        before = _target_state(target)
        outcome = run_runbook(tmp_path, *direct_args(source, target, tmp_path, database=name))
        _refused(outcome, check, message)
        assert _target_state(target) == before
    finally:
        _drop(source, name)


def test_older_target_is_refused(
    pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    _refused_for_a_database(
        pg18,
        pg15,
        tmp_path,
        setup="CREATE TABLE t (x int)",
        check="test_target_is_not_older_than_source",
        message="older than the source",
    )


def test_missing_extension_is_refused(
    pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """adminpack ships with PostgreSQL 15 and was removed in 17: the 18 target cannot have it."""
    _refused_for_a_database(
        pg15,
        pg18,
        tmp_path,
        setup="CREATE EXTENSION adminpack; CREATE TABLE t (x int)",
        check="test_target_user_may_create_source_extensions",
        message="adminpack",
    )


def test_unreachable_target_is_refused(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    gone = pgserver.Server("127.0.0.1", pgserver.free_port(), "postgres", "x" * 12, 18)
    outcome = run_runbook(tmp_path, *direct_args(pg15, gone, tmp_path, database=DB))
    _refused(outcome, "test_target_is_reachable", "Connection refused")


def test_wrong_target_password_is_refused_and_not_echoed(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    before = _target_state(pg18)
    wrong = pgserver.Server(pg18.host, pg18.port, pg18.user, "wrong-Pa55word", 18)
    outcome = run_runbook(tmp_path, *direct_args(pg15, wrong, tmp_path, database=DB))
    _refused(outcome, "test_target_is_reachable", "password authentication failed")
    assert "wrong-Pa55word" not in outcome.output
    assert _target_state(pg18) == before


def test_preflight_only_changes_nothing(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    _drop(pg18, DB)
    before = _target_state(pg18)
    outcome = run_runbook(
        tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB), "--preflight-only"
    )
    assert outcome.code == 0, outcome.output[-2000:]
    stages = {s["name"]: s["outcome"] for s in outcome.evidence["stages"]}
    assert stages["preflight"] == "passed"
    assert stages["dump"] == stages["restore"] == stages["verify"] == "not applicable"
    assert outcome.evidence["verified"] is False
    assert not list(outcome.workdir.iterdir())
    assert _target_state(pg18) == before


def test_other_sessions_on_the_source_are_refused_unless_allowed(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    _drop(pg18, DB)
    with _admin(pg15, DB) as app:
        app.execute("SET application_name = 'stackblitz-rails'")
        outcome = run_runbook(tmp_path / "refused", *direct_args(pg15, pg18, tmp_path, database=DB))
        _refused(outcome, "test_no_other_sessions_use_the_source_database", "stackblitz-rails")
        allowed = run_runbook(
            tmp_path / "allowed",
            *direct_args(pg15, pg18, tmp_path, database=DB),
            "--allow-active-connections",
            "--preflight-only",
        )
    assert allowed.code == 0, allowed.output[-2000:]
    assert allowed.evidence["preflight"]["other_source_sessions"] == 1


@pytest.mark.parametrize("method", ["stream", "seed"])
def test_restore_stops_at_the_first_error(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path, method: str
) -> None:
    """A session on the target database makes the dump's DROP DATABASE fail: psql must stop
    there, the stage must fail with psql's error, nothing after it may run, and the operator's
    database (which --allow-drop-target let the script drop) must stay as it was."""
    _reset_target(pg18)
    with _admin(pg18) as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (DB,)).fetchone()
    with _admin(pg18, DB):
        outcome = run_runbook(
            tmp_path,
            *direct_args(pg15, pg18, tmp_path, database=DB),
            "--allow-drop-target",
            "--method",
            method,
        )
    assert outcome.code == 1, outcome.output[-2000:]
    check, stage, later = {
        "stream": ("test_dump_is_streamed_into_target", "dump", "restore"),
        "seed": ("test_dump_is_restored_into_target", "restore", "verify"),
    }[method]
    failed = outcome.check(check)
    assert failed["outcome"] == "failed"
    assert "being accessed by other users" in failed["message"]
    stopped = {
        "stream": "pg_restore stopped with exit code 1",
        "seed": "psql stopped with exit code 3",
    }
    assert stopped[method] in failed["message"]
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages[stage]["outcome"] == "failed"
    assert stages[later]["detail"] == f"stage '{stage}' failed"
    assert outcome.evidence["verified"] is False
    with _admin(pg18) as conn:
        assert (
            conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (DB,)).fetchone() == oid
        )
    if method == "stream":
        assert f"the target's {DB} was left as it was" in failed["message"]
        assert _dumps_kept(outcome) == []


def test_seed_method_migration_is_verified(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """--method seed keeps the documented order and file: a gzip plain dump, proven whole and
    read back, then restored from the file."""
    _drop(pg18, DB)
    outcome = run_runbook(
        tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB), "--method", "seed"
    )
    assert outcome.code == 0, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["verified"] is True
    assert doc["dump"]["method"] == "seed" and doc["restore"]["seconds"] >= 0
    artifact = Path(doc["dump"]["path"])
    assert artifact.name.endswith(".sql.gz") and artifact.stat().st_mode & 0o777 == 0o600
    script = gzip.decompress(artifact.read_bytes())
    assert hashlib.sha256(script).hexdigest() == doc["dump"]["sql_sha256"]
    for check in ("test_dump_is_taken", "test_dump_file_on_disk_is_whole"):
        assert outcome.check(check)["outcome"] == "passed"
    not_applicable = {n["check"]: n["reason"] for n in doc["not_applicable"]}
    assert not_applicable["test_dump_is_streamed_into_target"].startswith("--method seed")
    assert outcome.junit_skips() == []


def test_stream_cut_short_is_refused_and_its_database_dropped(
    migrated: Outcome, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """A pg_dump whose output stops early but which exits 0 (as a broken pipe or exec stream
    can): the target's pg_restore has already restored part of it and must fail on the cut
    archive; then the half database is dropped and no file kept. The wrapper is a test double:
    a real pg_dump cannot be made to do this on demand."""
    _drop(pg18, DB)
    real = pgtools.for_major(18).bindir
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pg_dump").write_text(f'#!/bin/sh\n"{real}/pg_dump" "$@" | head -c 300000\n')
    (bindir / "pg_dump").chmod(0o755)
    for program in ("psql", "pg_restore"):
        (bindir / program).symlink_to(real / program)
    outcome = run_runbook(
        tmp_path, *direct_args(pg15, pg18, tmp_path, database=DB), "--pg-bindir", str(bindir)
    )
    assert outcome.code == 1, outcome.output[-3000:]
    failed = outcome.check("test_dump_is_streamed_into_target")
    assert failed["outcome"] == "failed", failed
    assert "pg_restore stopped" in failed["message"]
    assert f"the partly restored {DB} was dropped from the target" in failed["message"]
    with _admin(pg18) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (DB,)
        ).fetchone() == (0,)
    assert _dumps_kept(outcome) == []
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages["restore"]["detail"] == "stage 'dump' failed"
