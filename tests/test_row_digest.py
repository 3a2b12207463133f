"""The row digest (checks/rowdigest.py): the fast hash and MD5 see the same differences, a 15
and an 18 server give the same digests, and servers that disagree on the probe get MD5."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import data, rowdigest
from fixtures import pgserver
from tests.runbook_cli import direct_args, run_runbook

DB = "sbm_test_digest"
PAIRS = "sbm_test_digest_pairs"
DIGESTS = [rowdigest.FAST, rowdigest.MD5]
BY_NAME = {"ids": lambda d: d.name}

# Every kind of value the sample database holds, NULLs and text in several scripts included.
SCENE = (
    "CREATE TYPE mood AS ENUM ('calm', 'busy')",
    """CREATE TABLE mixed (id bigint PRIMARY KEY, name text, price numeric(12, 4), ratio float8,
        born date, seen timestamptz, span interval, tags text[], doc jsonb, content bytea,
        flag boolean, state mood, uid uuid)""",
    """INSERT INTO mixed SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'name ' || i || ' ✓ ü 漢' END,
        i / 7.0, i / 3.0, date '2024-01-01' + i, timestamptz '2024-01-01 00:00:00+00'
        + i * interval '1 second 17 microseconds', i * interval '1 day 3 hours',
        ARRAY['a' || i, NULL, 'b'], jsonb_build_object('n', i, 'x', 1.50, 'l', ARRAY[i, i + 1]),
        CASE WHEN i % 7 = 0 THEN NULL ELSE decode(repeat(md5(i::text), i % 20), 'hex') END,
        i % 2 = 0, CASE WHEN i % 3 = 0 THEN 'busy' ELSE 'calm' END::mood, md5(i::text)::uuid
        FROM generate_series(1, 2000) i""",
    "INSERT INTO mixed (id, content) VALUES (0, '\\x'), (-1, (SELECT string_agg(set_byte("
    "'\\x00'::bytea, 0, b), '') FROM generate_series(0, 255) b))",
)

# Two values of one column type that are equal as the type compares them, or differ only in
# their text or in one byte: each must give the table another digest.
ALMOST_EQUAL = {
    "one bytea byte": ("bytea", "'\\x00010203'", "'\\x00010303'"),
    "bytea empty and NULL": ("bytea", "'\\x'", "NULL"),
    "numeric scale": ("numeric", "1.0", "1.00"),
    "float zero's sign": ("float8", "'0'", "'-0'"),
    "trailing space": ("text", "'a'", "'a '"),
    "text empty and NULL": ("text", "''", "NULL"),
    "jsonb number's scale": ("jsonb", "'{\"a\": 1.0}'", "'{\"a\": 1.00}'"),
    "a microsecond": ("timestamptz", "'2024-01-01 00:00:00+00'", "'2024-01-01 00:00:00.000001+00'"),
    "array element NULL and 'NULL'": ("text[]", "ARRAY[NULL]::text[]", "ARRAY['NULL']"),
}


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


def _drop(server: pgserver.Server, name: str) -> None:
    with _admin(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _fresh(server: pgserver.Server, name: str, statements: tuple[str, ...]) -> None:
    _drop(server, name)
    with _admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with _admin(server, name) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def scene(pg15: pgserver.Server, pg18: pgserver.Server) -> Iterator[None]:
    """The same rows on 15 and 18; 18's database prints values differently by default."""
    for server in (pg15, pg18):
        _fresh(server, DB, SCENE)
    with _admin(pg18) as conn:
        conn.execute(
            f"ALTER DATABASE {DB} SET DateStyle = 'SQL, DMY'; "
            f"ALTER DATABASE {DB} SET TimeZone = 'Asia/Kathmandu'; "
            f"ALTER DATABASE {DB} SET extra_float_digits = -3; "
            f"ALTER DATABASE {DB} SET bytea_output = 'escape'"
        )
    yield
    for server in (pg15, pg18):
        _drop(server, DB)


def test_15_and_18_agree_on_the_probe_and_choose_the_fast_digest(
    pg15: pgserver.Server, pg18: pgserver.Server
) -> None:
    with _admin(pg15) as src, _admin(pg18) as dst:
        probes = rowdigest.probe(src), rowdigest.probe(dst)
        choice = rowdigest.decide(src, dst)
    assert probes[0] is not None and probes[0] == probes[1]
    assert choice.digest is rowdigest.FAST and choice.probes == probes
    assert choice.evidence() == {
        "digest": "hashtextextended",
        "why": "both servers gave the same hash of the probe row",
        "probe": {"source": str(probes[0]), "target": str(probes[0])},
    }


@pytest.mark.parametrize("row_digest", DIGESTS, **BY_NAME)
def test_15_and_18_give_the_same_digests_for_the_same_rows(
    scene: None, pg15: pgserver.Server, pg18: pgserver.Server, row_digest: rowdigest.RowDigest
) -> None:
    """A cross-version migration verifies: the same rows digest alike on both majors."""
    found = []
    for server in (pg15, pg18):
        with _admin(server, DB) as conn:
            found.append(data.all_table_data(conn, row_digest=row_digest))
    assert found[0] == found[1]
    mixed = found[0][("public", "mixed")]
    assert mixed.rows == 2002 and mixed.row_digest is row_digest


def test_the_two_digests_differ_and_do_not_compare(scene: None, pg18: pgserver.Server) -> None:
    """Each digest is its own hash; data.compare refuses to set one against the other."""
    with _admin(pg18, DB) as conn:
        fast, md5 = (data.snapshot(conn, row_digest=d) for d in DIGESTS)
    key = ("public", "mixed")
    assert fast.tables[key].digest != md5.tables[key].digest
    with pytest.raises(ValueError, match="digests of different hashes cannot be compared"):
        data.compare(fast, md5)


@pytest.mark.parametrize("row_digest", DIGESTS, **BY_NAME)
def test_a_value_that_differs_only_in_its_text_or_one_byte_changes_the_digest(
    pg18: pgserver.Server, row_digest: rowdigest.RowDigest
) -> None:
    """For each pair, a table holding the first value and one holding the second: same row
    count, different digest; a third table holding the first value again digests alike."""
    statements = []
    for n, (kind, first, second) in enumerate(ALMOST_EQUAL.values()):
        for table, value in (("a", first), ("b", second), ("c", first)):
            statements.append(f"CREATE TABLE {table}{n} (id int PRIMARY KEY, v {kind})")
            statements.append(f"INSERT INTO {table}{n} VALUES (1, {value}), (2, {first})")
    _fresh(pg18, PAIRS, tuple(statements))
    try:
        with _admin(pg18, PAIRS) as conn:
            found = data.all_table_data(conn, row_digest=row_digest)
    finally:
        _drop(pg18, PAIRS)
    for n, case in enumerate(ALMOST_EQUAL):
        a, b, c = (found[("public", f"{t}{n}")] for t in "abc")
        assert a.rows == b.rows == 2
        assert a.digest != b.digest, case
        assert a.digest == c.digest, case


def test_choose_says_why_it_falls_back_to_md5() -> None:
    assert rowdigest.choose(7, 7, (15, 18)).digest is rowdigest.FAST
    differ = rowdigest.choose(7, 8, (15, 18))
    assert differ.digest is rowdigest.MD5
    assert differ.why == (
        "the servers hash the probe row differently (source 7, target 8: one is big-endian): "
        "MD5 on both, slower"
    )
    old = rowdigest.choose(None, 7, (10, 18))
    assert old.digest is rowdigest.MD5
    assert old.why == (
        "the source (PostgreSQL 10) has no hashtextextended, which needs 11: MD5 on both, slower"
    )


def test_probes_that_disagree_make_the_run_use_md5(
    scene: None, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """A big-endian server cannot run here: the runbook's own run gets another target probe
    hash from tests/runbook_hooks.py (the one test double here), as such a server would give.
    The run decides MD5 for both sides, says so in the evidence and the report, and still
    verifies an equal copy and names a row changed on the target."""
    env = {"SBM_TEST_TARGET_PROBE": "12345"}
    args = ("-p", "tests.runbook_hooks", "--verify-only")
    equal = run_runbook(
        tmp_path / "equal", *direct_args(pg15, pg18, tmp_path, database=DB), *args, env=env
    )
    assert equal.code == 0, equal.output[-3000:]
    found = equal.evidence["row_digest"]
    assert found["digest"] == "md5"
    assert found["probe"]["target"] == "12345" and found["probe"]["source"] != "12345"
    assert "hash the probe row differently" in found["why"]
    assert "sbm: row digest: the servers hash the probe row differently" in equal.output
    report = (equal.reports / "report.html").read_text()
    assert html.escape(f"Row digest: md5 ({found['why']})") in report
    with _admin(pg18, DB) as conn:
        conn.execute("UPDATE mixed SET price = price + 0.0001 WHERE id = 1700")
    try:
        changed = run_runbook(
            tmp_path / "changed", *direct_args(pg15, pg18, tmp_path, database=DB), *args, env=env
        )
    finally:
        with _admin(pg18, DB) as conn:
            conn.execute("UPDATE mixed SET price = price - 0.0001 WHERE id = 1700")
    assert changed.code == 1, changed.output[-3000:]
    assert changed.evidence["row_digest"]["digest"] == "md5"
    assert any(
        d.startswith("public.mixed: same row count, different content; 1 row(s) differ")
        and "id=1700 changed (price)" in d
        for d in changed.evidence["data_differences"]
    ), changed.evidence["data_differences"]
