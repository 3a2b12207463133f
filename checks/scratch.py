"""The scratch restore: the source's schema (no rows) restored into a scratch database on the
real target before anything changes, as the migration's restore will restore it, then dropped.

A restore can be refused for reasons no catalog query foresees (an untrusted extension or
language, a collation whose locale the target lacks, a managed service's own rules); restoring
the schema itself as the same user, with the same pg_dump and pg_restore flags and programs, from
the same place (this host, or the pod in Kubernetes mode) is the proof, and its first error is
the refusal. The scratch database's name says what it is and which run made it, so that one a
run could not drop (killed, its connection lost) is recognised and dropped by the next preflight.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from psycopg import sql

from checks import errors, schema, server, stream
from checks.endpoint import Endpoint
from checks.restore import MAINTENANCE_DB
from checks.source import Source

PREFIX = "stackblitz_migrate_scratch_"
# The run's stamp (fixtures.options: 20261130T131200Z), lower-cased: a plain identifier.
NAME_PATTERN = r"^stackblitz_migrate_scratch_[0-9]{8}t[0-9]{6}z$"
# The stream's pg_dump flags, and only the sections without rows: what its first and last
# parts restore (the pre-data part's CREATE DATABASE aside: see _create).
DUMP_FLAGS = [*stream.PG_DUMP_FLAGS, "--section=pre-data", "--section=post-data"]


def name_for(stamp: str) -> str:
    return PREFIX + stamp.lower()


@dataclass(frozen=True)
class Result:
    database: str
    seconds: float  # creating the database and restoring the schema into it
    objects: int  # schema objects restored, counted as verification counts them

    def evidence(self) -> dict[str, object]:
        return {
            "database": self.database,
            "seconds": round(self.seconds, 3),
            "objects": self.objects,
            "dropped": True,
        }


def drop_leftovers(target: Endpoint) -> list[str]:
    """Drop the scratch databases earlier runs left on the target; what became of each.

    No FORCE: a scratch database someone is connected to belongs to a run still going (another
    operator's preflight), which must not be cut off; it is reported instead.
    """
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname ~ %s ORDER BY 1", (NAME_PATTERN,)
            )
        ]
        done, stuck = [], []
        for name in names:
            try:
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                done.append(f"{name}: left by an earlier run, dropped")
            except psycopg.Error as e:
                stuck.append(f"{name} ({_first_line(e)})")
    if stuck:
        raise errors.Refused(
            f"scratch database(s) of an earlier run could not be dropped: {'; '.join(stuck)}: "
            "if no other run uses them, drop them by hand (DROP DATABASE ... WITH (FORCE))"
        )
    return done


def restore_schema(
    source: Source,
    target: Endpoint,
    db: server.DatabaseInfo,
    *,
    stamp: str,
    target_major: int,
    workdir: Path,
) -> Result:
    """Create the scratch database as the source's (encoding, locale), restore the source's
    schema into it and drop it, whatever happens; Refused names the first object refused."""
    name = name_for(stamp)
    log = workdir / f"{name}.log"
    # The target's DBA sees who is restoring, as for the migration's own restore.
    scratch = replace(
        target, params={**target.params, "dbname": name, "application_name": name.replace("_", "-")}
    )
    started = time.monotonic()
    try:
        user = _create(target, name, db)
        try:
            source.restore_schema(scratch, target_major=target_major, log=log)
        except errors.RestoreFailed:  # the programs' own failure: their log says why
            raise errors.Refused(refusal(log, user)) from None
        seconds = time.monotonic() - started
        with scratch.connect() as conn:
            objects = len(schema.snapshot(conn))
    except BaseException as e:
        # Refused or interrupted (KeyboardInterrupt, a signal's exception): leave nothing behind,
        # say so, and go on unwinding the same exception.
        cleanup = _drop(target, name)
        if isinstance(e, errors.MigrationError) and [type(a) for a in e.args] == [str]:
            e.args = (f"{e.args[0]}; {cleanup}",)  # its message: one line in the evidence
        else:
            errors.add_note(e, cleanup)
            log.unlink(missing_ok=True)
        raise
    dropped = _drop(target, name)
    if not dropped.endswith(" was dropped"):
        raise errors.Refused(f"the schema restored on the target, but {dropped}")
    log.unlink(missing_ok=True)
    return Result(name, seconds, objects)


def _create(target: Endpoint, name: str, db: server.DatabaseInfo) -> str:
    """CREATE DATABASE as the dump's own (pg_dump -C) would: the source's encoding and locale.
    Returns the user that created it (libpq's default when --target-user is not given).

    Database-level settings (ALTER DATABASE ... SET) are not copied: the restore into the real
    database carries them, and they are not part of the schema sections.
    """
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        options = [
            sql.SQL("TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                sql.Literal(db.encoding), sql.Literal(db.collate), sql.Literal(db.ctype)
            )
        ]
        if conn.info.server_version >= 150000:
            # One of libc, icu, builtin (server.database), a keyword here, not a value.
            options.append(sql.SQL("LOCALE_PROVIDER " + db.locale_provider))
        if db.locale_provider in ("icu", "builtin") and db.icu_locale:
            keyword = "ICU_LOCALE" if db.locale_provider == "icu" else "BUILTIN_LOCALE"
            options.append(sql.SQL(keyword + " {}").format(sql.Literal(db.icu_locale)))
        joined = sql.SQL(" ").join(options)
        statement = sql.SQL("CREATE DATABASE {} {}").format(sql.Identifier(name), joined)
        try:
            conn.execute(statement)
        except psycopg.Error as e:
            raise errors.Refused(
                f"the target cannot create a database like the source's ({db.encoding}, "
                f"{db.locale_provider} locale {db.icu_locale or db.collate}): {_first_line(e)}; "
                "use a target server that has that locale"
            ) from None
        return conn.info.user


def _drop(target: Endpoint, name: str) -> str:
    """Drop this run's scratch database; say what became of it (never raises)."""
    try:
        with target.connect(dbname=MAINTENANCE_DB) as conn:
            found = conn.execute("SELECT FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                return f"no scratch database {name} was left on the target"
            # FORCE: a restore cut off in a pod may still be connected to it.
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    except (psycopg.Error, errors.MigrationError) as e:
        return (
            f"the scratch database {name} could not be dropped ({_first_line(e)}): the next "
            "preflight drops it, or drop it by hand"
        )
    return f"the scratch database {name} was dropped"


# The server's words where there are some, else the program's.
_SERVER_ERROR = re.compile(r"(?:ERROR|FATAL):\s+(.*)")
_PROGRAM_ERROR = re.compile(r"^(?:pg_dump|pg_restore): error: (.*)")
_ADVICE = (
    (
        re.compile(r"\bEXTENSION\b"),
        "have the extension allow-listed on the target (rds.allowed_extensions, "
        "azure.extensions) or use a user that may create it (the managed server's admin user)",
    ),
    (
        re.compile(r"\bCOLLATION\b|\blocale\b|\bICU\b", re.IGNORECASE),
        "the target lacks this collation's locale or provider: use a target that has it, or "
        "move the source's columns and indexes to a collation the target has",
    ),
    (
        re.compile(r"\bLANGUAGE\b|\bEVENT TRIGGER\b|\bPUBLICATION\b|\bCAST\b"),
        "only a superuser may create this: drop it from the source if StackBlitz does not use "
        "it, or restore with a user that may create it",
    ),
    (
        re.compile(r"REFRESH MATERIALIZED VIEW"),
        "the materialized view is refreshed here over empty tables, as the restore refreshes it "
        "over the real rows: fix its query (e.g. qualify the functions it calls with their "
        "schema) on the source",
    ),
)


def refusal(log: Path, user: str) -> str:
    """The first error in the scratch restore's log, the statement it stopped at and what to do."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    at = next(
        (i for i, x in enumerate(lines) if _SERVER_ERROR.search(x) or _PROGRAM_ERROR.search(x)),
        None,
    )
    if at is None:
        tail = lines[-1].strip() if lines else "no message"
        return f"the scratch restore of the source's schema stopped: {tail} (full log: {log})"
    if lines[at].startswith("pg_dump"):
        return (
            f"pg_dump of the source's schema failed: {lines[at].strip()}: check the source "
            f"(full log: {log})"
        )
    match = _SERVER_ERROR.search(lines[at]) or _PROGRAM_ERROR.search(lines[at])
    assert match
    error = match[1].strip()
    following = lines[at + 1 : at + 6]
    hint = next((x.split(":", 1)[1].strip() for x in following if x.startswith("HINT:")), "")
    command = next(
        (x.removeprefix("Command was:").strip() for x in following if x.startswith("Command was:")),
        "",
    )
    about = f"{error} ({hint})" if hint else error
    where = f" at `{command[:200]}`" if command else ""
    advice = next(
        (text for pattern, text in _ADVICE if pattern.search(command or error)),
        "change the object on the source, or have the target user granted what it lacks",
    )
    return (
        f"the source's schema does not restore on the target as {user}: {about}{where}; {advice} "
        f"(full log: {log})"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
