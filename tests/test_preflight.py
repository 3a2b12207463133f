"""The preflight checks that the end-to-end tests do not reach, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from checks import errors, preflight, server
from fixtures import pgserver


@pytest.fixture
def conn(pg18: pgserver.Server) -> Iterator[psycopg.Connection]:
    with psycopg.connect(**pg18.connect_kwargs(), autocommit=True) as c:
        yield c


def test_managed_allow_list_limits_extensions(conn: psycopg.Connection) -> None:
    """Azure's azure.extensions is a plain placeholder setting on a vanilla server: set it."""
    rights = server.extension_rights(conn)
    assert rights.describe() == "superuser"
    assert {"citext", "pgcrypto", "hstore", "pgstattuple"} <= rights.installed
    assert {"citext", "pgcrypto", "hstore"} <= rights.trusted
    assert "pgstattuple" not in rights.trusted
    conn.execute("SET azure.extensions = 'CITEXT, pgcrypto'")
    rights = server.extension_rights(conn)
    assert rights.describe() == (
        "Azure Database for PostgreSQL; superuser; azure.extensions: citext, pgcrypto"
    )
    assert [rights.refusal(n) for n in ("citext", "plpgsql", "hstore", "adminpack")] == [
        None,
        None,
        "not in the target's azure.extensions",
        "not installed on the target",  # removed in 17
    ]
    with pytest.raises(errors.Refused, match=r"2 extension\(s\) the source uses: adminpack"):
        preflight.extensions_creatable(
            {"citext": "1.6", "hstore": "1.8", "adminpack": "2.1"}, rights, "postgres"
        )


def test_user_without_superuser_may_create_trusted_extensions_only(
    pg18: pgserver.Server, conn: psycopg.Connection
) -> None:
    conn.execute("DROP ROLE IF EXISTS sbm_plain")
    conn.execute("CREATE ROLE sbm_plain LOGIN PASSWORD 'pw-for-test' CREATEDB")
    kwargs = {**pg18.connect_kwargs(), "user": "sbm_plain", "password": "pw-for-test"}
    try:
        with psycopg.connect(**kwargs) as plain:
            rights = server.extension_rights(plain)
        assert rights.refusal("citext") is None
        assert rights.refusal("pgstattuple") == "not trusted: only a superuser may create it"
        conn.execute("CREATE ROLE azure_pg_admin NOLOGIN")  # the server now says it is Azure
        with psycopg.connect(**kwargs) as plain:
            rights = server.extension_rights(plain)
        assert rights.refusal("pgstattuple") == (
            "not trusted: only a superuser or a member of azure_pg_admin may create it"
        )
        conn.execute("GRANT azure_pg_admin TO sbm_plain")
        with psycopg.connect(**kwargs) as plain:
            rights = server.extension_rights(plain)
        assert rights.refusal("pgstattuple") is None
        assert rights.describe() == "Azure Database for PostgreSQL; member of azure_pg_admin"
    finally:
        conn.execute("DROP ROLE IF EXISTS sbm_plain")
        conn.execute("DROP ROLE IF EXISTS azure_pg_admin")


def test_locale_missing_on_target_is_refused(conn: psycopg.Connection) -> None:
    def db(locale: str) -> server.DatabaseInfo:
        return server.DatabaseInfo("d", "UTF8", locale, locale, "libc", None, 1)

    preflight.locale_usable(db("C.UTF-8"), conn)
    preflight.locale_usable(db("POSIX"), conn)
    with pytest.raises(errors.Refused, match=r"'xx_YY\.UTF-8' is not installed on the target"):
        preflight.locale_usable(db("xx_YY.UTF-8"), conn)


def test_user_without_createdb_is_refused(pg18: pgserver.Server, conn: psycopg.Connection) -> None:
    conn.execute("DROP ROLE IF EXISTS sbm_no_createdb")
    conn.execute("CREATE ROLE sbm_no_createdb LOGIN PASSWORD 'pw-for-test' NOCREATEDB")
    try:
        kwargs = {**pg18.connect_kwargs(), "user": "sbm_no_createdb", "password": "pw-for-test"}
        with (
            psycopg.connect(**kwargs) as limited,
            pytest.raises(errors.Refused, match="grant CREATEDB"),
        ):
            preflight.target_can_create_databases(limited, "sbm_no_createdb")
        preflight.target_can_create_databases(conn, "postgres")
    finally:
        conn.execute("DROP ROLE sbm_no_createdb")


def test_too_little_free_space_is_refused(tmp_path: Path) -> None:
    assert preflight.free_space(tmp_path, 1) > 0
    with pytest.raises(errors.Refused, match="free some space, pass --workdir"):
        preflight.free_space(tmp_path, 1 << 60)


def test_other_sessions_are_named(conn: psycopg.Connection, pg18: pgserver.Server) -> None:
    kwargs = {**pg18.connect_kwargs(), "application_name": "puma: cluster worker 0"}
    with psycopg.connect(**kwargs):
        sessions = server.other_sessions(conn, "postgres")
    assert ("postgres", "puma: cluster worker 0", "127.0.0.1") in sessions
    with pytest.raises(errors.Refused, match="puma: cluster worker 0"):
        preflight.other_sessions(sessions, "postgres", allow=False)
    preflight.other_sessions(sessions, "postgres", allow=True)


def test_server_identity_tells_servers_apart(pg15: pgserver.Server, pg18: pgserver.Server) -> None:
    infos = []
    for s in (pg15, pg18, pg15):
        with psycopg.connect(**s.connect_kwargs()) as c:
            infos.append(server.info(c))
    assert infos[0].identity == infos[2].identity != infos[1].identity
    assert (infos[0].major, infos[1].major) == (15, 18)
