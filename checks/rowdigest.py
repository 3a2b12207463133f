"""Which 64-bit row digest both servers compute: PostgreSQL's own hash when they agree, else MD5.

What is digested is checks.data.RowShape's: a row printed as text, a bytea column as a hash of
its bytes; this module gives the hash. `hashtextextended(text COLLATE "C", 0)` gives 64 bits
straight out of PostgreSQL's internal hash (hash_any_extended), and a bytea enters the row as
`hash_array_extended(ARRAY[col], 0)`, the same hash of its bytes. On the 1 GB benchmark source
that digests 1.8-1.9 times as fast per side as MD5 (whose first 64 bits go through a hex string
and bit(64)): file contents 2.2-2.3 times (reading them is half of what is left), narrow rows
2.8 times, jsonb rows 1.5-1.6 times (printing jsonb as text is most of their cost). Both exist
from PostgreSQL 11. COLLATE "C" hashes the text's bytes whatever the database's collation.
(hash_record_extended is not used: it hashes enums by OID and numerics ignoring their scale, so
it would miss a change in a value's text.)

That hash is the same on every little-endian machine and every major since 11, but not on a
big-endian one; MD5 is the same everywhere. So a run decides once, in preflight, before any
digest: both servers hash a fixed text and a fixed bytea through the very expressions the digest
uses; when they agree, the fast digest is used on both, else (or when a server lacks the
functions) MD5 on both: correct, slower. The evidence records which and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# Longer than lookup3's 12-byte block with a tail, and every byte value: a hash that reads
# words in another byte order gives another value.
PROBE_TEXT = "stackblitz-migrate row digest probe: 0123456789 ~!@#$%^&*()_+"
PROBE_BYTES = bytes(range(256))


@dataclass(frozen=True)
class RowDigest:
    """A 64-bit hash of a row's text, and of a bytea's bytes (which enter the row's text)."""

    name: str
    _text: str  # SQL with one {}: a bigint from a text (or a ROW(...), printed as text)
    _bytes: str  # SQL with one {}: what a bytea column becomes in the row

    def of_text(self, value: sql.Composable) -> sql.Composable:
        return sql.SQL(self._text).format(value)

    def of_bytes(self, value: sql.Composable) -> sql.Composable:
        return sql.SQL(self._bytes).format(value)


FAST = RowDigest(
    "hashtextextended",
    'hashtextextended(({})::text COLLATE "C", 0)',
    "hash_array_extended(ARRAY[{}], 0)",
)
MD5 = RowDigest("md5", "('x' || left(md5(({})::text), 16))::bit(64)::bigint", "md5({})")


@dataclass(frozen=True)
class Choice:
    """The run's row digest and why; the same on both servers."""

    digest: RowDigest
    why: str
    probes: tuple[int | None, int | None]  # the fast hash of the probe on source, target

    def evidence(self) -> dict[str, object]:
        source, target = (str(p) if p is not None else None for p in self.probes)
        return {
            "digest": self.digest.name,
            "why": self.why,
            "probe": {"source": source, "target": target},
        }


def probe(conn: psycopg.Connection) -> int | None:
    """The fast digest of a fixed row (a text and a bytea), or None where the server lacks the
    functions (before PostgreSQL 11)."""
    row = sql.SQL("ROW({}::text, {})").format(
        sql.Literal(PROBE_TEXT),
        FAST.of_bytes(sql.SQL("{}::bytea").format(sql.Literal(PROBE_BYTES))),
    )
    try:
        with conn.transaction():
            found = conn.execute(sql.SQL("SELECT {}").format(FAST.of_text(row))).fetchone()
    except psycopg.errors.UndefinedFunction:
        return None
    assert found is not None
    return int(found[0])


def decide(source: psycopg.Connection, target: psycopg.Connection) -> Choice:
    """The run's row digest, from both servers' probes."""
    majors = (source.info.server_version // 10000, target.info.server_version // 10000)
    return choose(probe(source), probe(target), majors)


def choose(source: int | None, target: int | None, majors: tuple[int, int]) -> Choice:
    """The fast digest when both servers gave the same probe hash, else MD5, with the reason."""
    probes = (source, target)
    if source is not None and source == target:
        return Choice(FAST, "both servers gave the same hash of the probe row", probes)
    lacking = [
        f"the {side} (PostgreSQL {major}) has no hashtextextended, which needs 11"
        for side, value, major in zip(("source", "target"), probes, majors)
        if value is None
    ]
    why = (
        "; ".join(lacking)
        if lacking
        else f"the servers hash the probe row differently (source {source}, target {target}: "
        "one is big-endian)"
    )
    return Choice(MD5, f"{why}: MD5 on both, slower", probes)
