"""Direct mode's binary COPY of the larger tables (checks.tablecopy), on real servers: which
tables it takes, that its block ranges cover each table once, that what it copies matches the
source row for row, and that a copy cut between two rows loads nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import data, direct, errors, overlap, pgtools, rowdigest, tablecopy
from checks.endpoint import Endpoint
from checks.progress import Progress
from fixtures import pgserver, sample_db

DB = "tablecopy_src"


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


def _endpoint(role: str, server: pgserver.Server, dbname: str) -> Endpoint:
    params = {"host": server.host, "port": str(server.port), "user": server.user}
    return Endpoint(role, {**params, "dbname": dbname}, server.password)


@pytest.fixture(scope="module")
def source(pg15: pgserver.Server) -> Iterator[pgserver.Server]:
    """The sample database (every awkward type StackBlitz has) and tables made to be left to
    pg_dump (an enum column, a composite column, regclass columns) or copied without some of
    their columns (a generated column, a dropped column)."""
    with _admin(pg15) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        sample_db.create_database(conn, DB)
    with psycopg.connect(**pg15.connect_kwargs(DB)) as conn:
        sample_db.seed(conn, size_bytes=20_000_000)
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("CREATE TYPE pair AS (a int, b text)")
        conn.execute(
            "CREATE TABLE moods (id int, m mood, pad text);"
            "INSERT INTO moods SELECT i, 'ok', repeat('x', 500) FROM generate_series(1, 3000) i;"
            "CREATE TABLE pairs (id int, p pair, pad text);"
            "INSERT INTO pairs SELECT i, ROW(i, 'p')::pair, repeat('y', 500)"
            " FROM generate_series(1, 3000) i;"
            "CREATE TABLE named (id int, r regclass, rs regtype[], pad text);"
            "INSERT INTO named SELECT i, 'pg_class', '{int4}', repeat('z', 500)"
            " FROM generate_series(1, 3000) i;"
            "CREATE TABLE shaped (id int, gone text,"
            " doubled int GENERATED ALWAYS AS (id * 2) STORED, body bytea);"
            "INSERT INTO shaped (id, gone, body) SELECT i, 'g', decode(repeat('ab', 400), 'hex')"
            " FROM generate_series(1, 3000) i;"
            "ALTER TABLE shaped DROP COLUMN gone"
        )
        conn.commit()
    with _admin(pg15, DB) as conn:
        conn.execute("VACUUM ANALYZE")
    yield pg15
    with _admin(pg15) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


@pytest.fixture
def fresh(pg18: pgserver.Server) -> Iterator[None]:
    """No copy of the source on the target before or after (other tests share the server)."""

    def drop() -> None:
        with _admin(pg18) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB))
            )

    drop()
    yield
    drop()


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables from 64 kB are copied this way (the real threshold suits gigabytes)."""
    monkeypatch.setattr(tablecopy, "MIN_BYTES", 64 * 1024)


def test_builtin_typed_tables_are_sliced_and_the_others_left_to_pg_dump(
    source: pgserver.Server, small: None
) -> None:
    with psycopg.connect(**source.connect_kwargs(DB)) as conn:
        slices, copied, _total = tablecopy.plan(conn, 2, source_major=15)
        steps = tablecopy.steps(conn, 2, source_major=15)
        sizes = dict(
            conn.execute(
                "SELECT relname, pg_relation_size(oid) / current_setting('block_size')::int "
                "FROM pg_class WHERE relkind = 'r'"
            ).fetchall()
        )
    tables = {t for _, t in copied}
    assert {"project_files", "shaped"} <= tables
    # An enum's, a composite's and a regclass's binary forms hold OIDs of the source's.
    assert not {"moods", "pairs", "named"} & tables
    shaped = next(s for s in slices if s.table == ("public", "shaped"))
    assert '"doubled"' not in shaped.copy_out and '"gone"' not in shaped.copy_out
    assert '"id", "body"' in shaped.copy_in  # generated and dropped columns are not copied
    # The largest table comes in block ranges that meet end to end, the first and last open.
    files = [s for s in slices if s.table == ("public", "project_files")]
    assert len(files) > 1 and [s.index for s in files] == list(range(1, len(files) + 1))
    assert "ctid >=" not in files[0].copy_out and "ctid <" not in files[-1].copy_out
    for before, after in zip(files, files[1:], strict=False):
        end = before.copy_out.split("ctid < '")[1].split("'")[0]
        assert f"ctid >= '{end}'" in after.copy_out
    assert 0 < int(end.strip("()").split(",")[0]) < sizes["project_files"]
    # pg_dump's data parts leave out exactly the rows the slices copy, and keep the rest.
    dumped = [p for p in steps[1] if not isinstance(p, tablecopy.Slice)]
    excluded = {t for p in dumped for t in p.excluded}
    assert set(copied) <= excluded and ("public", "moods") not in excluded
    assert dumped and len(dumped) < len(steps[1])  # both kinds run in the data step
    # Before PostgreSQL 14 a range would scan the whole table: one slice per table.
    with psycopg.connect(**source.connect_kwargs(DB)) as conn:
        old, _, _ = tablecopy.plan(conn, 2, source_major=13)
    assert all(s.of == 1 for s in old) and len(old) == len(copied)


def test_sliced_copy_matches_the_source_row_for_row(
    source: pgserver.Server, pg18: pgserver.Server, small: None, fresh: None, tmp_path: Path
) -> None:
    """With verification overlapping the copy too: a table's early target digest starts only
    once the last of its slices is in."""
    target = _endpoint("target", pg18, "postgres")
    with _admin(source, DB) as src, _admin(pg18) as dst:
        digest = rowdigest.decide(src, dst).digest
    copy = direct.DirectSource(_endpoint("source", source, DB), jobs=2)
    into = target.with_dbname(DB)
    early = overlap.Early(into.connect, row_digest=digest)
    progress = Progress("dump", None)
    try:
        streamed = copy.stream(
            target, target_major=18, log=tmp_path / "copy.log", progress=progress, early=early
        )
        said = copy.kept_evidence()["binary_copy"]
        early_source, early_target, how = early.finish(copy.connect, into.connect)
    finally:
        early.close()
        copy.close()
    assert any(p.name.startswith("copy-public.project_files-") for p in streamed)
    assert isinstance(said, str) and "public.project_files in " in said, said
    found = how["target"]
    assert isinstance(found, dict) and found["changed_since_digest"] == [], how
    assert found["tables_digested_during_copy"] == len(early_target.tables), how
    with _admin(source, DB) as src, _admin(pg18, DB) as dst:
        before = data.snapshot(src, row_digest=digest)
        after = data.snapshot(dst, row_digest=digest)
    comparison = data.compare(before, after)
    assert comparison.differences == [], comparison.differences
    assert len(before.tables) == len(after.tables) > 10
    assert data.compare(early_source, early_target).differences == []
    assert early_target.tables == after.tables  # the early digests saw every row
    # The progress line counts a binary COPY's rows by estimate (they are not lines).
    rows = sum(t.rows for t in before.tables.values())
    assert 0.5 * rows < progress.rows < 2 * rows, (progress.rows, rows)


def test_copy_cut_between_two_rows_loads_nothing(
    source: pgserver.Server, pg18: pgserver.Server, small: None, fresh: None, tmp_path: Path
) -> None:
    """A source psql that ends its output one row short of the end mark and exits 0 (a relay
    that lost the stream's end): the target's server would commit those rows as a whole COPY,
    so the runbook must kill its psql instead. The wrapper is a test double: a real psql cannot
    be made to do this on demand."""
    real = Path(pgtools.for_major(18).bindir)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "psql").write_text(
        "#!/bin/sh\n"
        'case "$*" in *"TO STDOUT (FORMAT binary)"*)\n'
        f'  "{real}/psql" "$@" | head -c -2; exit 0;;\n'
        "esac\n"
        f'exec "{real}/psql" "$@"\n'
    )
    (bindir / "psql").chmod(0o755)
    for program in ("pg_dump", "pg_restore"):
        (bindir / program).symlink_to(real / program)
    target = _endpoint("target", pg18, "postgres")
    copy = direct.DirectSource(_endpoint("source", source, DB), pg_bindir=bindir, jobs=1)
    with pytest.raises(errors.DumpFailed, match="ended without its end mark: the stream was cut"):
        try:
            copy.stream(target, target_major=18, log=tmp_path / "copy.log")
        finally:
            copy.close()
    with _admin(pg18, DB) as conn:
        rows = {
            name: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
            ).fetchone()[0]  # type: ignore[index]
            for name in ("project_files", "shaped")
        }
    assert rows == {"project_files": 0, "shaped": 0}, rows
