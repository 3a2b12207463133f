"""Facts about a connected PostgreSQL server and database that the preflight needs."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class ServerInfo:
    version: str  # e.g. "15.19"
    version_num: int  # e.g. 150019
    # Identity of the running cluster: the system identifier where the role may read it, else
    # the postmaster start time, which two servers practically never share.
    identity: str

    @property
    def major(self) -> int:
        return self.version_num // 10000


def info(conn: psycopg.Connection) -> ServerInfo:
    version, num = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int"
    ).fetchone()  # type: ignore[misc]
    return ServerInfo(version.split()[0], num, _identity(conn))


def _identity(conn: psycopg.Connection) -> str:
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        if row and row[0]:
            return f"system {row[0]}"
    except psycopg.Error:
        pass  # managed servers often revoke pg_control_system(); fall back below
    row = conn.execute(
        "SELECT pg_postmaster_start_time()::text, current_setting('port')"
    ).fetchone()
    assert row
    return f"started {row[0]} port {row[1]}"


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str  # "libc", "icu" or "builtin"
    icu_locale: str | None
    size_bytes: int


def database(conn: psycopg.Connection, name: str) -> DatabaseInfo | None:
    """The database's encoding, locale and size, or None when it does not exist."""
    provider = "'libc'"
    icu = "NULL"
    if conn.info.server_version >= 150000:
        provider = (
            "CASE d.datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END"
        )
        icu = "d.daticulocale" if conn.info.server_version < 170000 else "d.datlocale"
    row = conn.execute(
        f"SELECT d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
        f"{provider}, {icu}, pg_database_size(d.oid) FROM pg_database d WHERE d.datname = %s",
        (name,),
    ).fetchone()
    return DatabaseInfo(*row) if row else None


def extensions(conn: psycopg.Connection) -> dict[str, str]:
    """Installed extensions of the connected database: name -> version."""
    return dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())


def available_extensions(conn: psycopg.Connection) -> set[str]:
    """Extensions the server can create: installed on disk and, on managed servers, allow-listed."""
    names = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    for setting in ("azure.extensions", "rds.allowed_extensions"):
        allowed = conn.execute("SELECT current_setting(%s, true)", (setting,)).fetchone()
        if allowed and allowed[0] and allowed[0] != "*":
            listed = {a.strip().lower() for a in allowed[0].split(",") if a.strip()}
            # plpgsql is part of every database and never on these allow-lists.
            names &= listed | {"plpgsql"}
    return names


def other_sessions(conn: psycopg.Connection, dbname: str) -> list[tuple[str, str, str]]:
    """Other sessions connected to the database: (user, application, client address)."""
    rows = conn.execute(
        "SELECT coalesce(usename, '?'), coalesce(application_name, ''), "
        "coalesce(host(client_addr), 'local') FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        (dbname,),
    ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def user_table_count(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'm', 'f') AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
    ).fetchone()
    assert row
    return int(row[0])


def can_create_databases(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


def locale_available(conn: psycopg.Connection, locale: str) -> bool:
    """Whether a libc locale name can be used for a new database on this server.

    The server's OS locales are visible as libc collations imported at initdb; names differ in
    spelling only ("en_US.UTF-8" is "en_US.utf8").
    """
    if _normal(locale) in {"c", "posix", "c.utf8"}:
        return True
    rows = conn.execute(
        "SELECT collcollate FROM pg_collation WHERE collprovider = 'c' AND collcollate IS NOT NULL"
    ).fetchall()
    return _normal(locale) in {_normal(r[0]) for r in rows}


def _normal(locale: str) -> str:
    lang, _, enc = locale.partition(".")
    return lang.lower() + ("." + enc.lower().replace("-", "") if enc else "")
