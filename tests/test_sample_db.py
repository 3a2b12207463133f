"""The sample StackBlitz database seeds on PostgreSQL 15 and 18, repeatably, and survives a dump."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from checks import pgtools
from fixtures import sample_db
from fixtures.pgserver import Server

if TYPE_CHECKING:
    from typing_extensions import LiteralString  # typing's own from 3.11

DIGEST_TABLES = (
    "public.organizations",
    "public.users",
    "public.memberships",
    "public.projects",
    "public.project_files",
    "public.attachments",
    "public.events",
    "public.audit_log_raw",
    "analytics.daily_project_activity",
)
LARGE_OBJECTS_DIGEST = (
    "SELECT count(*), md5(string_agg(oid::text || ':' || encode(lo_get(oid), 'hex'), ','"
    " ORDER BY oid)) FROM pg_largeobject_metadata"
)
SEQUENCES = (
    "SELECT string_agg(format('%s.%s=%s', schemaname, sequencename, last_value), ','"
    " ORDER BY schemaname, sequencename) FROM pg_sequences"
)


@pytest.fixture(params=[15, 18], ids=["pg15", "pg18"])
def server(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"pg{request.param}")


def admin(server: Server) -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(), autocommit=True)


def drop_database(server: Server, name: str) -> None:
    with admin(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def fresh_database(server: Server) -> Iterator[str]:
    """A uniquely named empty database from create_database, dropped afterwards."""
    name = f"sbm_sample_{uuid.uuid4().hex[:12]}"
    with admin(server) as conn:
        sample_db.create_database(conn, name)
    try:
        yield name
    finally:
        drop_database(server, name)


@contextmanager
def seeded(
    server: Server, **options: int
) -> Iterator[tuple[psycopg.Connection, sample_db.SeedSummary, float]]:
    """A connection to a freshly seeded database, the seed's summary and its seconds."""
    with fresh_database(server) as name, psycopg.connect(**server.connect_kwargs(name)) as conn:
        started = time.perf_counter()
        summary = sample_db.seed(conn, **options)
        yield conn, summary, time.perf_counter() - started


def scalar(conn: psycopg.Connection, query: sql.Composed | LiteralString) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def table(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def digests(conn: psycopg.Connection) -> dict[str, object]:
    """Content digests of the main tables, the large objects and the sequences' positions."""
    conn.execute("SET TIME ZONE 'UTC'")
    result: dict[str, object] = {
        name: scalar(
            conn,
            sql.SQL(
                "SELECT md5(string_agg(t::text, ',' ORDER BY t::text COLLATE \"C\")) FROM {} t"
            ).format(table(name)),
        )
        for name in DIGEST_TABLES
    }
    result["large objects"] = conn.execute(LARGE_OBJECTS_DIGEST).fetchone()
    result["sequences"] = scalar(conn, SEQUENCES)
    return result


def assert_counts(conn: psycopg.Connection, expected: dict[str, int]) -> None:
    actual = {
        name: scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(table(name)))
        for name in expected
    }
    assert actual == expected


def test_create_database_refuses_an_existing_name(pg18: Server) -> None:
    with fresh_database(pg18) as name, admin(pg18) as conn:
        with pytest.raises(psycopg.errors.DuplicateDatabase):
            sample_db.create_database(conn, name)
        encoding = "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = %s"
        assert conn.execute(encoding, (name,)).fetchone() == ("UTF8",)


def test_seed_counts_match_the_database(server: Server) -> None:
    with seeded(server) as (conn, summary, seconds):
        print(
            f"\nPostgreSQL {server.major}: scale=1 seed took {seconds:.2f} s, "
            f"{sum(summary.tables.values())} rows, {summary.bytes_written} bytes"
        )
        assert set(summary.tables) >= {f"public.{t}" for t in ("users", "projects", "events")}
        assert 1_000 <= sum(summary.tables.values()) <= 10_000
        assert seconds < 5
        assert_counts(conn, summary.tables)


def test_seed_has_the_awkward_parts(pg15: Server) -> None:
    """The features a dump and restore can trip on are really there."""
    with seeded(pg15) as (conn, summary, _):
        partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        assert scalar(conn, partitions) == 7
        assert scalar(conn, "SELECT count(*) FROM events_default") > 0
        assert scalar(conn, "SELECT count(*) FROM pg_largeobject_metadata") == 2
        orphans = (
            "SELECT count(*) FROM attachments a LEFT JOIN pg_largeobject_metadata m"
            " ON m.oid = a.blob WHERE m.oid IS NULL"
        )
        assert scalar(conn, orphans) == 0
        assert scalar(conn, "SELECT count(*) FROM project_file_stats") > 0
        assert scalar(conn, "SELECT count(*) FROM analytics.weekly_project_activity") > 0
        beyond = "SELECT last_value - (SELECT max(id) FROM users) FROM users_id_seq"
        assert scalar(conn, beyond) == 1000
        assert scalar(conn, "SELECT last_value FROM project_number_seq") == 1000 + 7 * (
            summary.tables["public.projects"] - 1
        )
        assert scalar(conn, "SELECT count(*) FROM users WHERE score = 'NaN'") == 1
        keyless = "SELECT count(*) - count(DISTINCT t) FROM audit_log_raw t"
        assert scalar(conn, keyless) > 0


def test_same_seed_same_content(server: Server) -> None:
    with seeded(server, seed=7) as (first, _, _), seeded(server, seed=7) as (second, _, _):
        assert digests(first) == digests(second)
        with seeded(server, seed=8) as (other, _, _):
            assert digests(other)["public.project_files"] != digests(first)["public.project_files"]


def test_every_byte_value_appears_in_file_content(pg18: Server) -> None:
    with seeded(pg18) as (conn, _, _):
        distinct = """
            SELECT count(DISTINCT get_byte(f.content, i))
            FROM project_files f, generate_series(0, octet_length(f.content) - 1) AS i
            WHERE f.content IS NOT NULL"""
        assert scalar(conn, distinct) == 256


def test_size_bytes_gives_roughly_that_size(pg18: Server) -> None:
    requested = 20_000_000
    with seeded(pg18, size_bytes=requested) as (conn, summary, seconds):
        size = int(scalar(conn, "SELECT pg_database_size(current_database())"))
        print(
            f"\nsize_bytes={requested}: {size} bytes in {seconds:.2f} s, "
            f"{size / seconds / 1e6:.1f} MB/s, {summary.bytes_written} bytes sent"
        )
        assert requested / 2 <= size <= requested * 2
        big = """
            SELECT pg_total_relation_size('project_files')
                 + (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('events'))"""
        assert int(scalar(conn, big)) > 0.8 * (size - sample_db.EMPTY_DATABASE_BYTES)
        assert_counts(conn, summary.tables)


def run(program: str, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL 18 client program against server, the password passed in its environment."""
    return subprocess.run(
        [
            pgtools.for_major(18).path(program),
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
            *args,
        ],
        env={**os.environ, "PGPASSWORD": server.password},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_dump_of_15_restores_into_18(pg15: Server, pg18: Server, tmp_path: Path) -> None:
    dump = tmp_path / "dump.sql"
    with seeded(pg15) as (source, summary, _):
        name = source.info.dbname
        dumped = run("pg_dump", pg15, "--if-exists", "-xcCO", "-d", name, "-f", str(dump))
        assert dumped.returncode == 0, dumped.stderr
        expected = digests(source)
    try:
        loaded = run(
            "psql", pg18, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-d", "postgres", "-f", str(dump)
        )
        assert loaded.returncode == 0, loaded.stderr
        assert "ERROR" not in loaded.stderr
        with psycopg.connect(**pg18.connect_kwargs(name)) as target:
            assert_counts(target, summary.tables)
            assert digests(target) == expected
    finally:
        drop_database(pg18, name)
