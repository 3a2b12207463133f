"""How a direct-mode archive is cut into parts: the schema, the data in streams that run at once
(--jobs of them), then indexes and constraints. These are the artifact's parts; the copy's
are the same without the data of the tables checks.tablecopy copies by binary COPY.

One pg_dump stream copies one table at a time, and a StackBlitz database is mostly one table
(project files) and the events: the copy then takes the sum of the two, where two streams take
the longer. pg_restore -j cannot read a stream, so the runbook runs the streams itself: every
pg_dump reads one exported snapshot (the same data as one pg_dump), the data parts load into
tables without indexes or foreign keys yet, and the post-data part builds those at the end, as
pg_restore does. The post-data part stays one stream: its index builds took 0.3 s of a 4 s copy
at 0.25 GB with pg_restore -j1 and -j2 alike (PostgreSQL builds a large index with parallel
workers of its own).

A table holding a large share of the data gets a part of its own (the share falls as --jobs
grows, so that a bigger host splits more); the rest is one part, large objects and sequences'
values included. Parts run largest first, --jobs at a time. pg_dump dumps whole tables only, so
the artifact's parts are whole tables; the copy cuts a large table into block ranges instead
(checks.tablecopy).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# A table this share of the data or more gets a stream of its own (with more jobs, 1/(2 jobs)
# if that is less); below it, one data stream is as fast (streams of unequal size end when the
# largest does).
ALONE_SHARE = 0.2

_TABLES = """
SELECT n.nspname, c.relname, pg_table_size(c.oid),
       (sum(pg_table_size(c.oid)) OVER ())::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 3 DESC, 1, 2
"""

Table = tuple[str, str]  # schema, name


@dataclass(frozen=True)
class Part:
    name: str  # its file in the artifact directory
    dump_flags: tuple[str, ...]  # what pg_dump dumps of the database
    creates: bool  # restored into the maintenance database with -C, creating the database
    # Data parts: the tables whose rows it holds (a table of its own), or None for every table
    # but `excluded` (the rest).
    tables: tuple[Table, ...] | None = None
    excluded: tuple[Table, ...] = ()
    data: bool = False


def alone_share(jobs: int) -> float:
    return min(ALONE_SHARE, 1.0 / (2 * max(jobs, 1)))


def plan(
    conn: psycopg.Connection, jobs: int = 2, elsewhere: tuple[Table, ...] = ()
) -> list[list[Part]]:
    """Steps, in order; the parts of one step run at once, up to `jobs` of them, largest first.
    The artifact's parts; the copy's, without the data of the tables copied `elsewhere`
    (checks.tablecopy's binary COPY)."""
    rows = conn.execute(_TABLES).fetchall()
    total = rows[0][3] if rows else 0
    alone = [
        (s, n)
        for s, n, size, _ in rows
        if total and size >= alone_share(jobs) * total and (s, n) not in elsewhere
    ]
    schema = Part("1-pre-data.dump", ("--section=pre-data",), creates=True)
    indexes = Part("3-post-data.dump", ("--section=post-data",), creates=False)
    data = [
        Part(
            f"2-data-{name}.dump"
            if len(alone) == len({n for _, n in alone})
            else f"2-data-{schema_name}.{name}.dump",
            ("--section=data", "--table", sql.Identifier(schema_name, name).as_string(conn)),
            creates=False,
            tables=((schema_name, name),),
            data=True,
        )
        for schema_name, name in alone
    ]
    # -t leaves large objects out and --exclude-table-data keeps them: they are dumped once.
    excluded = (*alone, *elsewhere)
    excludes = tuple(
        f"--exclude-table-data={sql.Identifier(s, n).as_string(conn)}" for s, n in excluded
    )
    rest = Part(
        "2-data.dump",
        ("--section=data", *excludes),
        creates=False,
        excluded=excluded,
        data=True,
    )
    return [[schema], [*data, rest], [indexes]]
