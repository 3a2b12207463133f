"""The preflight checks: each raises Refused with what to do, or returns a fact for the evidence."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg

from checks import errors, server


def target_not_older(source: server.ServerInfo, target: server.ServerInfo) -> None:
    if target.major < source.major:
        raise errors.Refused(
            f"the target runs PostgreSQL {target.version}, older than the source's "
            f"{source.version}: a dump may not load into an older server; use a target of "
            f"version {source.major} or newer"
        )


def not_same_server(source: server.ServerInfo, target: server.ServerInfo) -> None:
    if source.identity == target.identity:
        raise errors.Refused(
            "source and target are the same PostgreSQL server: the restore would drop the "
            "source database; point --target-host at the managed server"
        )


def target_can_create_databases(conn: psycopg.Connection, user: str) -> None:
    if not server.can_create_databases(conn):
        raise errors.Refused(
            f"the target user {user} may not create databases: grant CREATEDB (or use the "
            "managed server's admin user)"
        )


def extensions_creatable(
    source_extensions: dict[str, str], rights: server.ExtensionRights, user: str
) -> None:
    """Refuse, with every one of them, the source's extensions the target user may not create:
    the restore would stop at the first, inside the outage."""
    refused = {name: rights.refusal(name) for name in sorted(source_extensions)}
    lines = [f"{name} ({why})" for name, why in refused.items() if why]
    if lines:
        raise errors.Refused(
            f"the target user {user} may not create {len(lines)} extension(s) the source uses: "
            f"{'; '.join(lines)}; have them installed and allow-listed on the target "
            "(azure.extensions, rds.allowed_extensions) or use a user that may create them "
            "(the managed server's admin user), or drop them from the source if StackBlitz does "
            "not use them"
        )


def locale_usable(db: server.DatabaseInfo, conn: psycopg.Connection) -> None:
    """The CREATE DATABASE in the dump names the source's locale; the target must have it."""
    if db.locale_provider == "builtin" and conn.info.server_version < 170000:
        raise errors.Refused("the source uses the builtin locale provider: the target needs 17+")
    if db.locale_provider == "icu":
        row = conn.execute("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'").fetchone()
        if not row or not row[0]:
            raise errors.Refused(
                f"the source database uses ICU locale {db.icu_locale}, but the target server has "
                "no ICU support"
            )
    for what, locale in (("LC_COLLATE", db.collate), ("LC_CTYPE", db.ctype)):
        if locale and not server.locale_available(conn, locale):
            raise errors.Refused(
                f"the source database's {what} {locale!r} is not installed on the target: create "
                "the target with that locale available, or migrate to a supported one first"
            )


def dump_bytes_bound(database_bytes: int, method: str) -> int:
    """How much room the dump may need.

    The database's on-disk size bounds its gzip-compressed plain dump (which leaves out indexes
    and free space). The stream method keeps the script uncompressed, where bytea is written as
    hex, twice its size: so twice the database.
    """
    return database_bytes * (2 if method == "stream" else 1)


def free_space(workdir: Path, needed: int) -> int:
    """Free bytes in the workdir; refuse when the dump may not fit."""
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise errors.Refused(
            f"{workdir} has {_size(free)} free, the dump may need up to {_size(needed)}: "
            "free some space, pass --workdir on a larger disk, or --method seed (gzip, smaller)"
        )
    return free


def target_database_state(
    tables: int | None, database: str, *, allow_drop: bool, unverified: str | None = None
) -> str:
    """What the restore will find: refuse to drop a database that holds tables, unless told to.

    `tables` is None when the database does not exist. `unverified` is the mark (checks.marker)
    of a partial copy an earlier run left: that one is ours to replace.
    """
    if tables is None:
        return "absent"
    if unverified:
        return f"an unverified partial copy left by an earlier run ({unverified}): replaced"
    if tables == 0:
        return "exists, empty: the restore drops and recreates it"
    if not allow_drop:
        raise errors.Refused(
            f"the target already has a database {database} with {tables} table(s): the restore "
            "would drop it; pass --allow-drop-target if that is intended, or use another server"
        )
    return f"exists with {tables} table(s): dropped and recreated (--allow-drop-target)"


def other_sessions(sessions: list[tuple[str, str, str]], database: str, *, allow: bool) -> None:
    if sessions and not allow:
        who = "; ".join(f"{u} {a or '(no application name)'} from {c}" for u, a, c in sessions[:5])
        raise errors.Refused(
            f"{len(sessions)} other session(s) are connected to {database} ({who}): writes after "
            "the dump would be lost; stop StackBlitz first, or pass --allow-active-connections"
        )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"
