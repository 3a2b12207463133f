"""A table's key for naming rows, and the SQL that ranges over it (on either server).

The key is the primary key or else a unique index over NOT NULL columns (no expression, no
predicate). Key values travel as text (printed under checks/textformat's settings) and are cast
back to the column's type, so any type with a btree order works: bigint, uuid, text, timestamps,
several columns. A collatable column (text, varchar, citext) is ordered with COLLATE "C", byte
order, which is the same on both servers whatever their locales; ranges over other types are
served by the key's own btree index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

KeyValue = tuple[str, ...]

_KEY = """
SELECT array_agg(a.attname::text ORDER BY k.n), array_agg(format_type(a.atttypid, a.atttypmod)
       ORDER BY k.n), array_agg(a.attcollation <> 0 ORDER BY k.n)
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL AND k.n <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary
HAVING bool_and(a.attnotnull)
ORDER BY i.indisprimary DESC, count(*), i.indexrelid
LIMIT 1
"""


@dataclass(frozen=True)
class Key:
    columns: list[str]
    types: list[str]  # format_type(): the cast back from text
    collatable: list[bool]

    def _column(self, i: int) -> sql.Composable:
        column = sql.Identifier(self.columns[i])
        return sql.SQL('{} COLLATE "C"').format(column) if self.collatable[i] else column

    def _cast(self, i: int) -> sql.Composable:
        return sql.SQL("CAST(%s AS {})").format(sql.SQL(self.types[i]))

    def _tuple(self, parts: Sequence[sql.Composable]) -> sql.Composable:
        joined = sql.SQL(", ").join(parts)
        return joined if len(parts) == 1 else sql.SQL("({})").format(joined)

    @property
    def ordered(self) -> sql.Composable:
        """The key in its order: for ORDER BY, and the left side of a range."""
        return self._tuple([self._column(i) for i in range(len(self.columns))])

    @property
    def as_text(self) -> sql.Composable:
        """The key's values as text, under names of their own: an ORDER BY {ordered} in the
        same query must sort by the columns, not by this text."""
        return sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(f"key {i}"))
            for i, c in enumerate(self.columns)
        )

    def _value(self) -> sql.Composable:
        return self._tuple([self._cast(i) for i in range(len(self.columns))])

    def range(self, lo: KeyValue | None, hi: KeyValue | None) -> tuple[sql.Composable, list[str]]:
        """`lo <= key < hi` (either end open when None), and its parameters."""
        clauses: list[sql.Composable] = []
        params: list[str] = []
        for op, bound in ((">=", lo), ("<", hi)):
            if bound is not None:
                clauses.append(sql.SQL("{} {} {}").format(self.ordered, sql.SQL(op), self._value()))
                params += bound
        return (sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")), params

    def bucket(self, bounds: list[KeyValue]) -> tuple[sql.Composable, list[list[str]]]:
        """width_bucket(key, bounds): 0 below the first bound, i from bound i-1 up to bound i."""
        arrays = [
            sql.SQL("CAST(CAST(%s AS text[]) AS {}[])").format(sql.SQL(t)) for t in self.types
        ]
        params = [[b[i] for b in bounds] for i in range(len(self.columns))]
        if len(self.columns) == 1:
            return sql.SQL("width_bucket({}, {})").format(self.ordered, arrays[0]), params
        names = [sql.Identifier(f"k{i}") for i in range(len(self.columns))]
        fields = [
            sql.SQL('u.{} COLLATE "C"').format(n) if c else sql.SQL("u.{}").format(n)
            for n, c in zip(names, self.collatable)
        ]
        thresholds = sql.SQL(
            "(SELECT array_agg(ROW({fields}) ORDER BY u.n) "
            "FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n))"
        ).format(
            fields=sql.SQL(", ").join(fields),
            arrays=sql.SQL(", ").join(arrays),
            names=sql.SQL(", ").join(names),
        )
        row = sql.SQL("ROW({})").format(
            sql.SQL(", ").join(self._column(i) for i in range(len(self.columns)))
        )
        return sql.SQL("width_bucket({}, {})").format(row, thresholds), params

    def among(self, keys: list[KeyValue]) -> tuple[sql.Composable, list[str]]:
        """`key IN (...)`: equality, which the key's index serves whatever its collation."""
        plain = self._tuple([sql.Identifier(c) for c in self.columns])
        values = sql.SQL(", ").join(self._value() for _ in keys)
        return sql.SQL("{} IN ({})").format(plain, values), [v for k in keys for v in k]

    def label(self, value: KeyValue) -> str:
        """How a row is named in reports: id=42, or project_id=3,path=src/a.ts."""
        return ",".join(f"{c}={_short(v)}" for c, v in zip(self.columns, value))


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def find(conn: psycopg.Connection, schema: str, name: str) -> Key | None:
    """The primary key, else the narrowest unique key over NOT NULL columns; None when none."""
    qualified = sql.Identifier(schema, name).as_string(conn)
    row = conn.execute(_KEY, (qualified,)).fetchone()
    if row is None:
        return None
    columns, types, collatable = row
    return Key(list(columns), list(types), list(collatable))
