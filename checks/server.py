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


# Managed services say what they are through their own settings and roles: the admin role a
# customer gets (not a superuser), and the allow-list settings that limit CREATE EXTENSION.
_MANAGED = (
    ("Amazon RDS", "rds_superuser", ("rds.extensions", "rds.allowed_extensions")),
    ("Azure Database for PostgreSQL", "azure_pg_admin", ("azure.extensions",)),
)


@dataclass(frozen=True)
class ExtensionRights:
    """Which extensions the connected user may create on this server, and why."""

    installed: frozenset[str]  # pg_available_extensions: on the server's disk
    trusted: frozenset[str]  # default version trusted, or needing no superuser at all
    superuser: bool
    service: str | None  # the managed service the server says it is, if any
    admin_role: str | None  # the service's admin role, when the user is a member of it
    allow_lists: tuple[tuple[str, frozenset[str]], ...]  # (setting, names) the server sets

    def refusal(self, name: str) -> str | None:
        """Why the user may not create `name`, or None when it may."""
        if name == "plpgsql":
            return None  # in every database already; the dump's IF NOT EXISTS skips it
        if name not in self.installed:
            return "not installed on the target"
        for setting, names in self.allow_lists:
            if name not in names:
                return f"not in the target's {setting}"
        if self.superuser or self.admin_role or name in self.trusted:
            return None
        needs = f"a superuser or a member of {self._admin()}" if self.service else "a superuser"
        return f"not trusted: only {needs} may create it"

    def describe(self) -> str:
        """Who the user is, as far as creating extensions goes: for the evidence."""
        who = (
            "superuser"
            if self.superuser
            else f"member of {self.admin_role}"
            if self.admin_role
            else "not a superuser: trusted extensions only (in the databases it creates)"
        )
        lists = "; ".join(f"{s}: {', '.join(sorted(n)) or '(none)'}" for s, n in self.allow_lists)
        return "; ".join(x for x in (self.service, who, lists) if x)

    def _admin(self) -> str:
        return next((role for service, role, _ in _MANAGED if service == self.service), "")


def extension_rights(conn: psycopg.Connection) -> ExtensionRights:
    """What the connected user may create: superuser, the managed admin role, or trusted only.

    A trusted extension may be created by a user with CREATE on the database; the restore's
    user creates the database, so it owns it and has that right.
    """
    trusted_col = "v.trusted" if conn.info.server_version >= 130000 else "false"
    rows = conn.execute(
        f"SELECT e.name, coalesce({trusted_col} OR NOT v.superuser, false) "
        "FROM pg_available_extensions e LEFT JOIN pg_available_extension_versions v "
        "ON v.name = e.name AND v.version = e.default_version"
    ).fetchall()
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    superuser = bool(row and row[0])
    service = admin_role = None
    allow_lists = []
    for name, role, settings in _MANAGED:
        values = [(s, _setting(conn, s)) for s in settings]
        found = conn.execute(
            "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        if found is None and not any(v is not None for _, v in values):
            continue
        service = name
        admin_role = role if found and found[0] else None
        # Unset or '*' allows every installed extension.
        allow_lists += [
            (s, frozenset(a.strip().lower() for a in v.split(",") if a.strip()))
            for s, v in values
            if v and v.strip() != "*"
        ]
    return ExtensionRights(
        installed=frozenset(r[0] for r in rows),
        trusted=frozenset(r[0] for r in rows if r[1]),
        superuser=superuser,
        service=service,
        admin_role=admin_role,
        allow_lists=tuple(allow_lists),
    )


def _setting(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    return row[0] if row else None


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
