"""How a direct-mode stream is cut into parts: the schema, the data in two streams at once, then
indexes and constraints.

One pg_dump stream copies one table at a time, and a StackBlitz database is mostly one table
(project files) and the events: the copy then takes the sum of the two, where two streams take
the longer. pg_restore -j cannot read a stream, so the runbook runs the streams itself: every
pg_dump reads one exported snapshot (the same data as one pg_dump), the data parts load into
tables without indexes or foreign keys yet, and the post-data part builds those at the end, as
pg_restore does.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# A table this share of the data or more gets a stream of its own; below it, one data stream is
# as fast (two streams of unequal size end when the larger does).
ALONE_SHARE = 0.2

_LARGEST = """
SELECT n.nspname, c.relname, pg_table_size(c.oid),
       (sum(pg_table_size(c.oid)) OVER ())::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 3 DESC LIMIT 1
"""


@dataclass(frozen=True)
class Part:
    name: str  # its file in the artifact directory
    dump_flags: tuple[str, ...]  # what pg_dump dumps of the database
    creates: bool  # restored into the maintenance database with -C, creating the database


def plan(conn: psycopg.Connection) -> list[list[Part]]:
    """Steps, in order; the parts of one step run at once."""
    schema = Part("1-pre-data.dump", ("--section=pre-data",), creates=True)
    rest = Part("2-data.dump", ("--section=data",), creates=False)
    indexes = Part("3-post-data.dump", ("--section=post-data",), creates=False)
    row = conn.execute(_LARGEST).fetchone()
    if not row or not row[3] or row[2] < ALONE_SHARE * row[3]:
        return [[schema], [rest], [indexes]]
    table = sql.Identifier(row[0], row[1]).as_string(conn)
    # -t leaves large objects out and --exclude-table-data keeps them: they are dumped once.
    others = Part(rest.name, (*rest.dump_flags, f"--exclude-table-data={table}"), creates=False)
    alone = Part(f"2-data-{row[1]}.dump", (*rest.dump_flags, "--table", table), creates=False)
    return [[schema], [alone, others], [indexes]]
