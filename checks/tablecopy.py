"""Direct mode's data copy for the larger tables: binary COPY from the copy's snapshot into the
target, one table or one block range of a table per stream.

pg_dump writes table data as text COPY only. A bytea value then travels as hex, twice its
bytes, printed by the source and parsed back by the target, and StackBlitz's largest table is
file contents: on the 1 GB benchmark source its 728 MB took 12.6-22 s through pg_dump -Fc |
pg_restore, 10.9-12.5 s as a text COPY between two psql, and 5.1 s as a binary COPY, with a
third of the CPU (20, 17 and 6.4 core-seconds). One table is also one stream however large it
is; cut into block ranges (`ctid`, a TID range scan from PostgreSQL 14) it runs in as many
streams as --jobs allows: two ranges of that table took 8.5-9.5 s against 10.9-12.5 s.

So a table at least MIN_BYTES large whose every column has a built-in type (whose binary form
is the same on every major and carries no OID that differs between servers, as an enum's or a
composite's does) is copied this way, in ranges of about a fair share of the data each. The
rest (small tables, tables with other types, sequences' values, large objects) stays in one
pg_dump data part (checks.parts). The archive kept as the artifact is pg_dump's whatever the
copy did (stage 6 dumps every part again from the same snapshot), so it restores by hand.

Each stream is two psql: one on the source, in a REPEATABLE READ transaction that imported the
snapshot (the rows every pg_dump of the copy reads), running `COPY (SELECT ...) TO STDOUT
(FORMAT binary)`, and one on the target running `COPY ... FROM STDIN (FORMAT binary)`. The
runbook relays between them (checks.stream) and proves the rows whole before the target's COPY
ends: the source's psql exited 0 and its output ended with the format's end mark. A binary COPY
that ends between two rows is taken as whole by the server, so on a cut the target's psql is
killed instead, and its transaction rolls back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg
from psycopg import sql

from checks import parts
from checks.parts import Table

# Smaller tables stay in pg_dump's data part: two psql and two logins per stream cost more than
# COPY's text form does on a table this size.
MIN_BYTES = 8 * 1024 * 1024
TID_RANGE_SCAN_MAJOR = 14  # before it, each range would scan the whole table: no split
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
END_MARK = b"\xff\xff"  # the trailer: a tuple of -1 fields

# As pg_dump and pg_restore set for their own sessions: no timeout cuts a long COPY, row security
# makes the source's COPY fail rather than leave rows out, and text travels in the database's
# own encoding (the target's database was created in it by the schema's part).
_SESSION = (
    "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 "
    "-c row_security=off"
)

# Built-in (below FirstNormalObjectId) base, range and multirange types with binary I/O, but
# not the reg* types (regclass and its kin, and their arrays): their binary form is an OID,
# which names another object on the target, where their text form names the same one.
_TABLES = """
SELECT n.nspname, c.relname, pg_table_size(c.oid),
       pg_relation_size(c.oid) / current_setting('block_size')::int,
       greatest(c.reltuples, 0)::bigint,
       array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0),
       bool_and(t.oid < 16384 AND t.typtype IN ('b', 'r', 'm') AND t.typname !~ '^_?reg'
                AND t.typsend <> 0 AND t.typreceive <> 0) FILTER (WHERE a.attnum > 0)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a
  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
LEFT JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  -- an extension's tables: pg_dump dumps (or leaves out) their rows as the extension says
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
GROUP BY n.nspname, c.relname, c.oid, c.reltuples
ORDER BY 3 DESC, 1, 2
"""


@dataclass(frozen=True)
class Slice:
    """The rows of one table, or of one block range of it, copied by one stream."""

    table: Table
    index: int  # 1-based, of `of` ranges
    of: int
    bytes: int  # its share of the table's size, for the order the streams start in
    rows: int  # its share of the table's estimated rows, for the progress line
    copy_out: str  # the source's COPY ... TO STDOUT
    copy_in: str  # the target's COPY ... FROM STDIN
    encoding: str  # the source database's: both psql's client_encoding

    @property
    def name(self) -> str:
        schema, table = self.table
        return f"copy-{schema}.{table}" + (f"-{self.index}-of-{self.of}" if self.of > 1 else "")


def plan(
    conn: psycopg.Connection, jobs: int, source_major: int
) -> tuple[list[Slice], list[Table], int]:
    """The slices, largest first; the tables they cover; every table's bytes together."""
    rows = conn.execute(_TABLES).fetchall()
    total = sum(row[2] for row in rows)
    found = conn.execute(
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert found
    encoding = str(found[0])
    # About a fair share per stream, and at least one of the table's blocks.
    piece = max(total / (2 * max(jobs, 1)), MIN_BYTES)
    slices: list[Slice] = []
    copied: list[Table] = []
    for schema, name, size, blocks, tuples, columns, binary in rows:
        if size < MIN_BYTES or not columns or not binary:
            continue
        ranges = 1
        if source_major >= TID_RANGE_SCAN_MAJOR and blocks > 1:
            ranges = min(math.ceil(size / piece), 4 * max(jobs, 1), blocks)
        copied.append((schema, name))
        sizes = (size, blocks, tuples)
        slices += _slices(conn, (schema, name), tuple(columns), sizes, ranges, encoding)
    slices.sort(key=lambda s: -s.bytes)
    return slices, copied, total


def _slices(
    conn: psycopg.Connection,
    table: Table,
    columns: tuple[str, ...],
    sizes: tuple[int, int, int],  # bytes, blocks, estimated rows
    ranges: int,
    encoding: str,
) -> list[Slice]:
    size, blocks, tuples = sizes
    target = sql.Identifier(*table)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(target, names)
    out: list[Slice] = []
    for i in range(ranges):
        first, end = blocks * i // ranges, blocks * (i + 1) // ranges
        where = []
        if i > 0:  # the first range starts at the table's start
            where.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({first},0)")))
        if i < ranges - 1:  # the last has no end: nothing the snapshot sees is past it
            where.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({end},0)")))
        select = sql.SQL("SELECT {} FROM ONLY {}").format(names, target)
        if where:
            select = sql.SQL("{} WHERE {}").format(select, sql.SQL(" AND ").join(where))
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
        out.append(
            Slice(
                table,
                i + 1,
                ranges,
                size // ranges,
                tuples // ranges,
                copy_out.as_string(conn),
                copy_in.as_string(conn),
                encoding,
            )
        )
    return out


def steps(conn: psycopg.Connection, jobs: int, source_major: int) -> list[list[parts.Part | Slice]]:
    """The copy's steps: checks.parts's, without the data of the tables these slices copy, and
    with the slices beside its data parts, largest first, --jobs at a time."""
    slices, copied, total = plan(conn, jobs, source_major)
    schema, data, indexes = parts.plan(conn, jobs, tuple(copied))
    # pg_dump's parts hold what the slices leave, the biggest first (checks.parts): it starts
    # among the slices where its size puts it.
    left = max(total - sum(s.bytes for s in slices), 0)
    at = next((i for i, s in enumerate(slices) if s.bytes < left), len(slices))
    return [schema, [*slices[:at], *data, *slices[at:]], indexes]


def session_env(env: dict[str, str], encoding: str) -> dict[str, str]:
    """A psql's environment (its password's) with the settings its COPY needs."""
    options = f"{env.get('PGOPTIONS', '')} {_SESSION}".strip()
    return {**env, "PGOPTIONS": options, "PGCLIENTENCODING": encoding}
