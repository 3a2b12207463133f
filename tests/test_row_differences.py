"""Verification names the rows that differ, by key and column, never by value: real servers."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from checks import data, rowdiff, rowdigest, textformat
from fixtures import pgserver
from tests.runbook_cli import Outcome, direct_args, run_runbook

DB = "sbm_test_rows"

# The same tables and rows on both servers; every value is distinctive, so that a test can
# look for it in what the runbook wrote.
SCENE = (
    """CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, email text,
        score double precision, created_at timestamptz NOT NULL)""",
    """INSERT INTO accounts SELECT i, 'name-' || md5('n' || i), 'mail-' || md5('e' || i),
        i / 7.0, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute'
        FROM generate_series(1, 3000) i""",
    "CREATE TABLE devices (id uuid PRIMARY KEY, label text, payload jsonb)",
    """INSERT INTO devices SELECT md5('d' || i)::uuid, 'label-' || md5('l' || i),
        jsonb_build_object('token', 'tok-' || md5('t' || i)) FROM generate_series(1, 2000) i""",
    """CREATE TABLE memberships (org_id bigint, user_name text, role text NOT NULL,
        PRIMARY KEY (org_id, user_name))""",
    """INSERT INTO memberships SELECT i % 10, 'user-' || md5('u' || i), 'role-' || md5('r' || i)
        FROM generate_series(1, 2000) i""",
    "CREATE TABLE files (id bigint PRIMARY KEY, path text NOT NULL, content bytea)",
    """INSERT INTO files SELECT i, 'path-' || md5('p' || i),
        decode(repeat(md5('c' || i), 40), 'hex') FROM generate_series(1, 500) i""",
    "CREATE TABLE sessions (token text PRIMARY KEY, data text)",
    """INSERT INTO sessions SELECT 'S' || lpad(i::text, 5, '0'), 'sess-' || md5('s' || i)
        FROM generate_series(1, 1000) i""",
    "CREATE TABLE audit (at timestamp NOT NULL, action text)",
    """INSERT INTO audit SELECT timestamp '2024-01-01' + (i % 500) * interval '1 hour',
        'act-' || md5('a' || (i % 500)) FROM generate_series(1, 1000) i""",
    "CREATE TABLE tickets (id int PRIMARY KEY, v text)",
    "INSERT INTO tickets SELECT i, 't-' || md5('t' || i) FROM generate_series(1, 1000) i",
    "CREATE TABLE slugs (nickname text UNIQUE, slug text NOT NULL UNIQUE, hits int)",
    """INSERT INTO slugs SELECT 'nick-' || md5('k' || i), 'slug-' || i, i
        FROM generate_series(1, 300) i""",
    "CREATE TABLE untouched (id int PRIMARY KEY, v text)",
    "INSERT INTO untouched SELECT i, 'v-' || md5('v' || i) FROM generate_series(1, 100) i",
)

DEVICE_ID = "md5('d' || 17)::uuid"
DEVICE = f"SELECT {DEVICE_ID}::text"
MEMBER_NAME = "'user-' || md5('u' || 1234)"
MEMBER = f"SELECT {MEMBER_NAME}"

# On the target only: the differences each test expects to see named.
TAMPER = (
    "UPDATE accounts SET name = 'name-changed-0f1e2d3c4b5a' WHERE id = 1234",
    "DELETE FROM accounts WHERE id IN (2000, 2001)",
    "INSERT INTO accounts VALUES (5000, 'name-inserted-9a8b7c6d', 'mail-inserted-5e4f3a2b', 1.5,"
    " '2025-01-01')",
    f'UPDATE devices SET payload = \'{{"token": "tok-changed-77aa66bb"}}\' WHERE id = {DEVICE_ID}',
    "UPDATE memberships SET role = 'role-changed-c0ffee11'"
    f" WHERE org_id = 4 AND user_name = {MEMBER_NAME}",
    "UPDATE files SET content = set_byte(content, 100, 255 - get_byte(content, 100)) WHERE id = 77",
    "DELETE FROM sessions WHERE token BETWEEN 'S00101' AND 'S00700'",
    "DELETE FROM tickets WHERE id <= 150 OR id % 100 = 0",
    "UPDATE slugs SET hits = -1 WHERE slug = 'slug-42'",
    "UPDATE audit SET action = 'act-changed-d00dfeed' WHERE ctid = (SELECT min(ctid) FROM audit)",
)


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


def _fresh(server: pgserver.Server) -> None:
    with _admin(server) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    with _admin(server, DB) as conn:
        for statement in SCENE:
            conn.execute(statement)


@pytest.fixture(scope="module")
def scene(pg15: pgserver.Server, pg18: pgserver.Server) -> Iterator[dict[str, list[str]]]:
    """The source on 15, the tampered copy on 18 (whose database prints values differently:
    the digests must not care). Yields every value of a changed row, before and after."""
    for server in (pg15, pg18):
        _fresh(server)
    with _admin(pg15, DB) as conn:
        device, member = conn.execute(DEVICE).fetchone()[0], conn.execute(MEMBER).fetchone()[0]
        before = _values(conn, device, member)
    with _admin(pg18, DB) as conn:
        for statement in TAMPER:
            conn.execute(statement)
        after = _values(conn, device, member)
    with _admin(pg18) as conn:
        for setting in (
            "DateStyle = 'SQL, DMY'",
            "TimeZone = 'Asia/Kathmandu'",
            "extra_float_digits = -3",
            "bytea_output = 'escape'",
        ):
            conn.execute(f"ALTER DATABASE {DB} SET {setting}")
    yield {"device": [device], "member": [member], "values": sorted(set(before + after))}
    for server in (pg15, pg18):
        with _admin(server) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _values(conn: psycopg.Connection, device: str, member: str) -> list[str]:
    """The non-key values of every row the tampering touches, as text and bytea as hex."""
    rows = [
        *conn.execute(
            "SELECT name, email, score::text FROM accounts WHERE id IN (1234, 2000, 2001, 5000)"
        ),
        *conn.execute("SELECT label, payload::text FROM devices WHERE id = %s", [device]),
        *conn.execute("SELECT role FROM memberships WHERE org_id = 4 AND user_name = %s", [member]),
        *conn.execute("SELECT path, encode(content, 'hex') FROM files WHERE id = 77"),
        *conn.execute("SELECT data FROM sessions WHERE token BETWEEN 'S00101' AND 'S00700'"),
        *conn.execute("SELECT v FROM tickets WHERE id <= 150 OR id % 100 = 0"),
        *conn.execute("SELECT nickname FROM slugs WHERE slug = 'slug-42'"),
        *conn.execute("SELECT action FROM audit WHERE action LIKE 'act-changed%'"),
        *conn.execute("SELECT action FROM audit WHERE ctid = (SELECT min(ctid) FROM audit)"),
    ]
    found = [str(v) for row in rows for v in row if v is not None]
    # Long values also as pieces: a report must not hold part of one either.
    return [p for v in found for p in (v, v[:24], v[-24:]) if len(p) >= 12]


def _connect(server: pgserver.Server):  # type: ignore[no-untyped-def]
    return lambda: psycopg.connect(**server.connect_kwargs(DB))


def _narrowed(
    pg15: pgserver.Server, pg18: pgserver.Server, row_digest: rowdigest.RowDigest = rowdigest.FAST
) -> dict[str, dict]:  # type: ignore[type-arg]
    src, dst = data.snapshot_both(_connect(pg15), _connect(pg18), row_digest=row_digest)
    comparison = rowdiff.explain(data.compare(src, dst), src, dst, _connect(pg15), _connect(pg18))
    tables = {t["name"]: t for t in comparison.tables}
    for t in tables.values():
        t["line"] = next(
            (d for d in comparison.differences if d.startswith(f"public.{t['name']}: ")), ""
        )
    return tables


@pytest.fixture(scope="module")
def narrowed(scene: dict, pg15: pgserver.Server, pg18: pgserver.Server) -> dict[str, dict]:  # type: ignore[type-arg]
    return _narrowed(pg15, pg18)


def _rows(table: dict) -> list[tuple[dict, str, list | None]]:  # type: ignore[type-arg]
    return [(r["key"], r["difference"], r.get("columns")) for r in table["row_differences"]]


def test_bigint_key_names_changed_deleted_and_inserted_rows(narrowed: dict) -> None:  # type: ignore[type-arg]
    accounts = narrowed["accounts"]
    assert _rows(accounts) == [
        ({"id": "1234"}, "changed", ["name"]),
        ({"id": "2000"}, "only on source", None),
        ({"id": "2001"}, "only on source", None),
        ({"id": "5000"}, "only on target", None),
    ]
    counts = accounts["row_narrowing"]
    assert (counts["only_on_source"], counts["only_on_target"], counts["different"]) == (2, 1, 1)
    assert counts["key"] == ["id"] and counts["complete"] is True and counts["note"] == ""
    assert accounts["line"].startswith("public.accounts: 3000 rows on source, 2999 on target; ")
    assert "4 row(s) differ (2 only on source, 1 only on target, 1 changed)" in accounts["line"]
    assert "id=1234 changed (name)" in accounts["line"]


def test_uuid_key_names_the_changed_row_and_column(narrowed: dict, scene: dict) -> None:  # type: ignore[type-arg]
    assert _rows(narrowed["devices"]) == [({"id": scene["device"][0]}, "changed", ["payload"])]


def test_composite_key_names_the_changed_row_and_column(narrowed: dict, scene: dict) -> None:  # type: ignore[type-arg]
    key = {"org_id": "4", "user_name": scene["member"][0]}
    assert _rows(narrowed["memberships"]) == [(key, "changed", ["role"])]
    assert (
        f"org_id=4,user_name={scene['member'][0]} changed (role)" in narrowed["memberships"]["line"]
    )


def test_one_flipped_byte_in_a_bytea_value_is_named(narrowed: dict) -> None:  # type: ignore[type-arg]
    assert _rows(narrowed["files"]) == [({"id": "77"}, "changed", ["content"])]


def test_rows_missing_in_a_block_are_all_counted_and_the_first_named(narrowed: dict) -> None:  # type: ignore[type-arg]
    """600 rows gone under a text key: counted to the last one, the first 20 named in order."""
    sessions = narrowed["sessions"]
    assert sessions["row_narrowing"]["only_on_source"] == 600
    named = [r["key"]["token"] for r in sessions["row_differences"]]
    assert named == [f"S{i:05d}" for i in range(101, 121)]
    assert {r["difference"] for r in sessions["row_differences"]} == {"only on source"}
    assert "600 row(s) differ (600 only on source): token=S00101 only on source" in sessions["line"]


def test_rows_are_named_in_the_order_of_their_key_not_of_its_text(narrowed: dict) -> None:  # type: ignore[type-arg]
    tickets = narrowed["tickets"]
    assert tickets["row_narrowing"]["only_on_source"] == 150 + 9
    assert [r["key"]["id"] for r in tickets["row_differences"]] == [str(i) for i in range(1, 21)]


def test_without_a_primary_key_a_unique_not_null_key_names_rows(narrowed: dict) -> None:  # type: ignore[type-arg]
    """slugs has two unique keys, nickname's first; only slug's column is NOT NULL."""
    assert _rows(narrowed["slugs"]) == [({"slug": "slug-42"}, "changed", ["hits"])]


def test_a_table_without_a_key_counts_rows_by_digest(narrowed: dict) -> None:  # type: ignore[type-arg]
    audit = narrowed["audit"]
    assert audit["row_differences"] == []
    counts = audit["row_narrowing"]
    assert counts["key"] is None
    assert (counts["only_on_source"], counts["only_on_target"]) == (1, 1)
    assert "no usable key; by row digest 1 row(s) only on source, 1 only on target" in audit["line"]


def test_matching_tables_are_not_narrowed(narrowed: dict) -> None:  # type: ignore[type-arg]
    assert narrowed["untouched"]["match"] is True
    assert narrowed["untouched"]["row_differences"] == []
    assert "row_narrowing" not in narrowed["untouched"]


def test_a_matching_database_is_not_narrowed(pg15: pgserver.Server) -> None:
    src, _ = data.snapshot_both(_connect(pg15), _connect(pg15), row_digest=rowdigest.FAST)
    comparison = data.compare(src, src)

    def refuse():  # type: ignore[no-untyped-def]
        raise AssertionError("a matching database must not be read again")

    assert rowdiff.explain(comparison, src, src, refuse, refuse) is comparison


def test_a_server_lost_before_naming_rows_keeps_the_differences(
    scene: dict,  # type: ignore[type-arg]
    pg15: pgserver.Server,
    pg18: pgserver.Server,
) -> None:
    src, dst = data.snapshot_both(_connect(pg15), _connect(pg18), row_digest=rowdigest.FAST)
    gone = pgserver.Server("127.0.0.1", pgserver.free_port(), "postgres", "x" * 12, 18)
    comparison = rowdiff.explain(data.compare(src, dst), src, dst, _connect(pg15), _connect(gone))
    files = next(t for t in comparison.tables if t["name"] == "files")
    assert files["row_narrowing"]["compared"] is False
    assert "Connection refused" in files["row_narrowing"]["note"]
    line = next(d for d in comparison.differences if d.startswith("public.files: "))
    assert line.startswith("public.files: same row count, different content; rows not named: ")


@pytest.mark.parametrize("row_digest", [rowdigest.FAST, rowdigest.MD5], ids=lambda d: d.name)
def test_the_row_digests_add_up_to_the_whole_table_digest(
    scene: dict,  # type: ignore[type-arg]
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    row_digest: rowdigest.RowDigest,
) -> None:
    """The narrowing digests rows as the whole-table pass does, under the same settings: the
    row digests it reads sum to the digest that pass found, on each side."""
    for server in (pg15, pg18):
        with psycopg.connect(**server.connect_kwargs(DB)) as conn:
            whole = data.all_table_data(conn, row_digest=row_digest)
            textformat.apply(conn, local=False)
            for (schema, name), table in whole.items():
                shape = data.row_shape(conn, schema, name, row_digest=row_digest)
                query = sql.SQL("SELECT {} FROM ONLY {}").format(
                    shape.digest, sql.Identifier(schema, name)
                )
                assert sum(r[0] for r in conn.execute(query)) == int(table.digest), name


def test_the_md5_digest_names_the_same_rows(
    narrowed: dict,  # type: ignore[type-arg]
    pg15: pgserver.Server,
    pg18: pgserver.Server,
) -> None:
    """With the MD5 row digest (servers that disagree on the fast one's probe) the narrowing
    finds the same rows, counts and columns as with the fast digest."""
    md5 = _narrowed(pg15, pg18, rowdigest.MD5)
    assert md5.keys() == narrowed.keys()
    for name, table in narrowed.items():
        assert [md5[name][k] for k in ("match", "row_differences", "line")] == [
            table[k] for k in ("match", "row_differences", "line")
        ], name
        if "row_narrowing" in table:
            counts = ("only_on_source", "only_on_target", "different", "complete", "note")
            assert [md5[name]["row_narrowing"][c] for c in counts] == [
                table["row_narrowing"][c] for c in counts
            ], name


def test_many_small_cuts_find_the_same_rows(
    narrowed: dict,  # type: ignore[type-arg]
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cut into 3 buckets at a time until 8 rows are left: up to seven levels of ranges, with
    both ends bounded, for every kind of key; the rows found must not change."""
    monkeypatch.setattr(rowdiff, "LEAF_ROWS", 8)
    monkeypatch.setattr(rowdiff, "SPLIT_ROWS", 4)
    monkeypatch.setattr(rowdiff, "MAX_BUCKETS", 3)
    deep = _narrowed(pg15, pg18)
    for name in ("accounts", "devices", "memberships", "files", "sessions"):
        assert deep[name]["row_differences"] == narrowed[name]["row_differences"], name
        counts = ("only_on_source", "only_on_target", "different", "note")
        assert [deep[name]["row_narrowing"][c] for c in counts] == [
            narrowed[name]["row_narrowing"][c] for c in counts
        ], name


def test_a_table_changed_since_the_whole_table_pass_is_said(
    scene: dict,  # type: ignore[type-arg]
    pg15: pgserver.Server,
    pg18: pgserver.Server,
) -> None:
    """The first cut's buckets must add up to the whole-table pass's count and digest: they
    do (the other tests find no note), and a digest that moved is said."""
    with _connect(pg15)() as src, _connect(pg18)() as dst:
        for conn in (src, dst):
            textformat.apply(conn, local=False)
        before = [
            data.table_data(c, "public", "accounts", "table", row_digest=rowdigest.FAST)
            for c in (src, dst)
        ]
        moved = data.TableData(**{**before[0].__dict__, "digest": str(int(before[0].digest) + 1)})
        found = rowdiff.narrow_table(src, dst, (moved, before[1]))
    assert (
        found.note == "the source changed while it was compared; stop StackBlitz and compare again"
    )
    assert found.different == 1  # the rows are still named


def test_the_budget_stops_narrowing_and_says_so(
    scene: dict,
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[type-arg]
) -> None:
    monkeypatch.setattr(rowdiff, "BUDGET", 300)
    accounts = _narrowed(pg15, pg18)["accounts"]
    assert accounts["row_narrowing"]["complete"] is False
    assert "counts are lower bounds" in accounts["row_narrowing"]["note"]
    assert "at least " in accounts["line"]


@pytest.fixture(scope="module")
def verified(
    scene: dict,
    pg15: pgserver.Server,
    pg18: pgserver.Server,
    tmp_path_factory: pytest.TempPathFactory,  # type: ignore[type-arg]
) -> Outcome:
    tmp = tmp_path_factory.mktemp("rows")
    return run_runbook(tmp, *direct_args(pg15, pg18, tmp, database=DB), "--verify-only")


def test_verify_only_names_rows_in_every_artifact(verified: Outcome, scene: dict) -> None:  # type: ignore[type-arg]
    assert verified.code == 1, verified.output[-3000:]
    doc = verified.evidence
    tables = {t["name"]: t for t in doc["tables"]}
    assert ({"id": "77"}, "changed", ["content"]) in _rows(tables["files"])
    assert tables["untouched"]["row_differences"] == []
    failure = verified.check("test_data_matches")["message"]
    assert "id=1234 changed (name)" in failure and "\n" not in failure
    html = (verified.reports / "report.html").read_text()
    # Under the table's own row, in the Tables table: the key, the kind, the column.
    files_row = html.index("<td>files</td>")
    assert html.index("<td>id=77</td><td>changed</td><td>content</td>") > files_row
    assert "Row differences: 2 only on source, 1 only on target, 1 changed; key id" in html
    junit = (verified.reports / "junit.xml").read_text()
    assert "id=1234 changed (name)" in junit
    assert "naming the rows that differ in public.accounts" in verified.output


def test_no_value_of_a_changed_row_in_any_artifact(verified: Outcome, scene: dict) -> None:  # type: ignore[type-arg]
    written = {
        p.name: p.read_text(errors="replace") for p in verified.reports.rglob("*") if p.is_file()
    }
    assert {"evidence.json", "report.html", "junit.xml"} <= set(written)
    written["terminal output"] = verified.output
    assert len(scene["values"]) > 20
    for name, text in written.items():
        for value in scene["values"]:
            assert value not in text, f"a value of a changed row is in {name}"
