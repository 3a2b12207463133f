"""Names the rows that differ in a table whose whole-table digest differs, both servers at once.

Only tables the whole-table pass (checks/data.py) found different are narrowed, so a matching
database costs nothing more. With a key (checks/rowkeys.py) the key range is cut into buckets
at key values read in order from one side; each bucket's count and digest sum are computed on
both servers at once, and only buckets that differ are cut again, until a bucket holds a few
hundred rows, which are compared row by row. A bucket empty on one side is counted without
reading its rows. Row digests are checks/data.py's own, with the hash the whole-table pass used
(checks.rowdigest), so the narrowing sees exactly the differences that pass saw. Without a key,
the rows' digests are compared as multisets (grouped by their top bits first), which counts
rows missing and extra but cannot name them.

No value of a row is read into this process except key values (ids) and digests.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

import psycopg
from psycopg import sql

from checks import data, errors, rowkeys, textformat
from checks.rowkeys import Key, KeyValue

LIMIT = 20  # rows named per table; the counts cover every row
FIRST = 3  # rows named in the one-line failure
LEAF_ROWS = 256  # a range this small is compared row by row
SPLIT_ROWS = 64  # rows per bucket when a range is cut
MAX_BUCKETS = 4096  # buckets per cut: a binary search over them costs little per row
MAX_DEPTH = 8  # cuts before a range is compared row by row whatever its size
BUDGET = 500_000  # rows read per table, row by row, before the narrowing stops counting
_DIGEST_BUCKET_BITS = 52  # without a key: 4096 buckets by the top bits of the row digest

T = TypeVar("T")


@dataclass
class RowDifferences:
    """What the narrowing found in one table."""

    key: Key | None  # None: rows were compared as a multiset of digests, or not at all
    compared: bool = True  # False: the note says why the rows were not compared
    only_on_source: int = 0
    only_on_target: int = 0
    different: int = 0
    rows: list[dict[str, object]] = field(default_factory=list)  # at most LIMIT, by key
    complete: bool = True  # False: BUDGET stopped it, the counts are lower bounds
    note: str = ""
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.only_on_source + self.only_on_target + self.different

    def summary(self) -> str:
        """The part of the one-line failure after the table's name: counts, the first keys."""
        if not self.compared:
            return self.note
        if self.key is None:
            # A changed row is one row only on each side: its digest is all there is to match.
            text = (
                f"no usable key; by row digest {'at least ' if not self.complete else ''}"
                f"{self.only_on_source} row(s) only on source, {self.only_on_target} only on target"
            )
        else:
            parts = [
                f"{n} {what}"
                for n, what in (
                    (self.only_on_source, "only on source"),
                    (self.only_on_target, "only on target"),
                    (self.different, "changed"),
                )
                if n
            ]
            text = f"{'at least ' if not self.complete else ''}{self.total} row(s) differ"
            text += f" ({', '.join(parts)})" if parts else ""
            named = [_row_label(r, self.key) for r in self.rows[:FIRST]]
            if named:
                more = ", ..." if self.total > len(named) else ""
                text += ": " + ", ".join(named) + more
        return text + (f" [{self.note}]" if self.note else "")

    def evidence(self) -> dict[str, object]:
        return {
            "key": self.key.columns if self.key else None,
            "only_on_source": self.only_on_source,
            "only_on_target": self.only_on_target,
            "different": self.different,
            "compared": self.compared,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "note": self.note,
        }


def _row_label(row: dict[str, object], key: Key) -> str:
    label = key.label(tuple(row["key"].values()))  # type: ignore[union-attr]
    if row["difference"] == "changed":
        return f"{label} changed ({', '.join(row['columns'] or ['?'])})"  # type: ignore[arg-type]
    return f"{label} {row['difference']}"


class _Both:
    """One connection to each server, and each query run on both at once."""

    def __init__(self, source: psycopg.Connection, target: psycopg.Connection) -> None:
        self.conns = (source, target)
        self.pool = ThreadPoolExecutor(max_workers=2)

    def run(self, fn: Callable[[psycopg.Connection, int], T]) -> tuple[T, T]:
        futures = [self.pool.submit(fn, conn, side) for side, conn in enumerate(self.conns)]
        return futures[0].result(), futures[1].result()

    def close(self, *, interrupted: bool) -> None:
        if interrupted:  # stop the servers' work rather than wait for it
            for conn in self.conns:
                conn.cancel_safe()
        self.pool.shutdown(cancel_futures=True)


SIDES = ("source", "target")


class _Table:
    """The narrowing of one table: the queries and what they found so far."""

    def __init__(
        self,
        both: _Both,
        schema: str,
        name: str,
        shapes: tuple[data.RowShape, data.RowShape],
        key: Key | None,
    ) -> None:
        self.both = both
        self.table = sql.Identifier(schema, name)
        self.shapes = shapes
        self.key = key
        self.found = RowDifferences(key)
        self.read = 0  # rows read row by row, both sides
        self.changed: list[KeyValue] = []  # shown rows whose columns are still to be named

    # -- with a key --------------------------------------------------------------------

    def narrow(self, rows: tuple[int, int], digests: tuple[int, int]) -> None:
        assert self.key
        self._range(None, None, rows, depth=0, whole=digests)
        self._name_columns()

    def _range(
        self,
        lo: KeyValue | None,
        hi: KeyValue | None,
        rows: tuple[int, int],
        *,
        depth: int,
        whole: tuple[int, int] | None = None,
    ) -> None:
        if 0 in rows:
            self._one_sided(lo, hi, rows)
        elif max(rows) <= LEAF_ROWS or depth >= MAX_DEPTH:
            self._row_by_row(lo, hi, rows)
        else:
            self._cut(lo, hi, rows, depth=depth, whole=whole)

    def _one_sided(self, lo: KeyValue | None, hi: KeyValue | None, rows: tuple[int, int]) -> None:
        """Every row in the range is on one side only: count them, name the first few."""
        side = 0 if rows[0] else 1
        difference = f"only on {SIDES[side]}"
        if side == 0:
            self.found.only_on_source += rows[0]
        else:
            self.found.only_on_target += rows[1]
        room = LIMIT - len(self.found.rows)
        if room <= 0:
            return
        assert self.key
        where, params = self.key.range(lo, hi)
        query = sql.SQL("SELECT {} FROM ONLY {} WHERE {} ORDER BY {} LIMIT {}").format(
            self.key.as_text, self.table, where, self.key.ordered, sql.Literal(room)
        )
        conn = self.both.conns[side]
        for value in conn.execute(query, params).fetchall():
            self._show(tuple(value), difference)

    def _row_by_row(self, lo: KeyValue | None, hi: KeyValue | None, rows: tuple[int, int]) -> None:
        if self.read + sum(rows) > BUDGET:
            self._stop()
            return
        self.read += sum(rows)
        assert self.key
        key = self.key
        where, params = key.range(lo, hi)

        def fetch(conn: psycopg.Connection, side: int) -> dict[KeyValue, int]:
            query = sql.SQL("SELECT {}, {} FROM ONLY {} WHERE {} ORDER BY {}").format(
                key.as_text, self.shapes[side].digest, self.table, where, key.ordered
            )
            return {tuple(r[:-1]): r[-1] for r in conn.execute(query, params)}

        src, dst = self.both.run(fetch)
        before = self.found.total
        for value, digest in src.items():
            if value not in dst:
                self.found.only_on_source += 1
                self._show(value, "only on source")
            elif dst[value] != digest:
                self.found.different += 1
                if self._show(value, "changed"):
                    self.changed.append(value)
        for value in dst:  # in the target's key order
            if value not in src:
                self.found.only_on_target += 1
                self._show(value, "only on target")
        if self.found.total == before:
            # Counts or digests differed but no row did: the sides ordered the key differently
            # or the data moved while it was compared.
            self.found.note = "a range differed but none of its rows did; compare again"

    def _cut(
        self,
        lo: KeyValue | None,
        hi: KeyValue | None,
        rows: tuple[int, int],
        *,
        depth: int,
        whole: tuple[int, int] | None,
    ) -> None:
        assert self.key
        key = self.key
        where, params = key.range(lo, hi)
        larger = 0 if rows[0] >= rows[1] else 1
        buckets = max(2, min(MAX_BUCKETS, rows[larger] // SPLIT_ROWS))
        step = math.ceil(rows[larger] / buckets)
        # Bounds read in key order from the side with more rows: an index-only scan of the key.
        bounds_query = sql.SQL(
            "SELECT {text} FROM (SELECT {cols}, row_number() OVER (ORDER BY {ordered}) AS n "
            "FROM ONLY {table} WHERE {where}) s WHERE mod(n, {step}) = 1 AND n > 1 ORDER BY n"
        ).format(
            text=key.as_text,
            cols=sql.SQL(", ").join(map(sql.Identifier, key.columns)),
            ordered=key.ordered,
            table=self.table,
            where=where,
            step=sql.Literal(step),
        )
        bounds = [tuple(b) for b in self.both.conns[larger].execute(bounds_query, params)]
        if not bounds:
            self._row_by_row(lo, hi, rows)
            return
        bucket, bucket_params = key.bucket(bounds)

        def digests(conn: psycopg.Connection, side: int) -> dict[int, tuple[int, int]]:
            query = sql.SQL(
                "SELECT {bucket}, count(*), sum({digest})::text FROM ONLY {table} "
                "WHERE {where} GROUP BY 1"
            ).format(bucket=bucket, digest=self.shapes[side].digest, table=self.table, where=where)
            found = conn.execute(query, [*bucket_params, *params]).fetchall()
            return {int(b): (int(n), int(d)) for b, n, d in found}

        src, dst = self.both.run(digests)
        if whole is not None:
            for side, buckets in enumerate((src, dst)):
                total = (sum(n for n, _ in buckets.values()), sum(d for _, d in buckets.values()))
                if total != (rows[side], whole[side]):
                    self.found.note = (
                        f"the {SIDES[side]} changed while it was compared; stop StackBlitz and "
                        "compare again"
                    )
        edges: list[KeyValue | None] = [lo, *bounds, hi]
        for i in range(len(bounds) + 1):
            s, d = src.get(i, (0, 0)), dst.get(i, (0, 0))
            if s != d:
                self._range(edges[i], edges[i + 1], (s[0], d[0]), depth=depth + 1)

    def _stop(self) -> None:
        self.found.complete = False
        self.found.note = f"stopped after reading {self.read:,} rows; counts are lower bounds"

    def _show(self, value: KeyValue, difference: str) -> bool:
        if len(self.found.rows) >= LIMIT:
            return False
        assert self.key
        row: dict[str, object] = {
            "key": dict(zip(self.key.columns, value)),
            "difference": difference,
        }
        if difference == "changed":
            row["columns"] = None  # named in _name_columns
        self.found.rows.append(row)
        return True

    def _name_columns(self) -> None:
        """For the changed rows shown: which columns differ, by each column's own digest."""
        if not self.changed:
            return
        assert self.key
        key = self.key
        where, params = key.among(self.changed)

        def columns(conn: psycopg.Connection, side: int) -> dict[KeyValue, list[str]]:
            shape = self.shapes[side]
            each = sql.SQL(", ").join(shape.column_digests)
            query = sql.SQL("SELECT {}, {} FROM ONLY {} WHERE {}").format(
                key.as_text, each, self.table, where
            )
            n = len(key.columns)
            return {tuple(r[:n]): list(r[n:]) for r in conn.execute(query, params)}

        src, dst = self.both.run(columns)
        names = self.shapes[0].columns
        for row in self.found.rows:
            value = tuple(row["key"].values())  # type: ignore[union-attr]
            if row["difference"] == "changed" and value in src and value in dst:
                row["columns"] = [c for c, a, b in zip(names, src[value], dst[value]) if a != b]

    # -- without a key ---------------------------------------------------------------------

    def multiset(self) -> None:
        """Rows missing and extra on the target, by their digests' multisets."""

        def hashed(side: int) -> sql.Composable:
            return sql.SQL("(SELECT {} AS h FROM ONLY {}) s").format(
                self.shapes[side].digest, self.table
            )

        def buckets(conn: psycopg.Connection, side: int) -> dict[int, tuple[int, int]]:
            query = sql.SQL("SELECT h >> {}, count(*), sum(h)::text FROM {} GROUP BY 1").format(
                sql.Literal(_DIGEST_BUCKET_BITS), hashed(side)
            )
            return {int(b): (int(n), int(d)) for b, n, d in conn.execute(query)}

        src, dst = self.both.run(buckets)
        differing = sorted(b for b in src.keys() | dst.keys() if src.get(b) != dst.get(b))
        chosen, rows = [], 0
        for b in differing:
            rows += src.get(b, (0, 0))[0] + dst.get(b, (0, 0))[0]
            if rows > BUDGET:
                self._stop()
                break
            chosen.append(b)
            self.read = rows

        def counts(conn: psycopg.Connection, side: int) -> Counter[int]:
            query = sql.SQL("SELECT h, count(*) FROM {} WHERE h >> {} = ANY(%s) GROUP BY h").format(
                hashed(side), sql.Literal(_DIGEST_BUCKET_BITS)
            )
            return Counter({int(h): int(n) for h, n in conn.execute(query, [chosen])})

        if chosen:
            src_rows, dst_rows = self.both.run(counts)
            self.found.only_on_source = sum((src_rows - dst_rows).values())  # .total(): 3.10
            self.found.only_on_target = sum((dst_rows - src_rows).values())


def narrow_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    before: tuple[data.TableData, data.TableData],
) -> RowDifferences:
    """The rows that differ in one table; both connections must have checks/textformat applied."""
    started = time.monotonic()
    schema, name = before[0].schema, before[0].name
    # The whole-table pass's own row digest: the narrowing sees the differences it saw.
    row_digest = before[0].row_digest
    shapes = (
        data.row_shape(source, schema, name, row_digest=row_digest),
        data.row_shape(target, schema, name, row_digest=row_digest),
    )
    key = rowkeys.find(source, schema, name)
    both = _Both(source, target)
    table = _Table(both, schema, name, shapes, key)
    try:
        if shapes[0].columns != shapes[1].columns:
            table.found.compared = False
            table.found.note = "the columns differ (see the schema differences); rows not compared"
        elif key is None:
            table.multiset()
        else:
            table.narrow(
                (before[0].rows, before[1].rows),
                (int(before[0].digest), int(before[1].digest)),
            )
    except BaseException:
        both.close(interrupted=True)
        raise
    both.close(interrupted=False)
    table.found.seconds = time.monotonic() - started
    return table.found


def explain(
    comparison: data.Comparison,
    source: data.Snapshot,
    target: data.Snapshot,
    connect_source: Callable[[], psycopg.Connection],
    connect_target: Callable[[], psycopg.Connection],
    emit: Callable[[str], None] | None = None,
) -> data.Comparison:
    """The comparison with each differing table's rows named: its `row_differences`, its
    `row_narrowing` counts, and the counts and first keys added to its one-line difference.

    A failure here (a server gone, a query refused) is said in place of the rows and does not
    hide the differences the whole-table pass found.
    """
    differing = {
        i: (source.tables[key], target.tables[key])
        for i, entry in enumerate(comparison.tables)
        if not entry["match"]
        and (key := (str(entry["schema"]), str(entry["name"]))) in source.tables
        and key in target.tables
    }
    if not differing:
        return comparison
    found: dict[int, RowDifferences] = {}
    try:
        with connect_source() as src, connect_target() as dst:
            for conn in (src, dst):
                textformat.apply(conn, local=False)  # the same settings as the whole-table pass
                conn.commit()  # kept for the session, whatever a failed query rolls back
                # One snapshot per side for all of a table's queries: its cuts add up.
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            for i, before in differing.items():
                label = f"{before[0].schema}.{before[0].name}"
                if emit:
                    emit(f"verify: naming the rows that differ in {label}")
                try:
                    found[i] = narrow_table(src, dst, before)
                except psycopg.Error as e:
                    found[i] = _not_named(e)
                for conn in (src, dst):
                    conn.rollback()  # ends the table's snapshot
                if emit:
                    emit(f"verify: {label}: {found[i].summary()} ({found[i].seconds:.1f} s)")
    except (psycopg.Error, errors.MigrationError) as e:
        found |= {i: _not_named(e) for i in differing if i not in found}
    tables = list(comparison.tables)
    differences = list(comparison.differences)
    for i, rows in found.items():
        entry = tables[i]
        tables[i] = {**entry, "row_differences": rows.rows, "row_narrowing": rows.evidence()}
        prefix = f"{entry['schema']}.{entry['name']}: "
        at = next(n for n, line in enumerate(differences) if line.startswith(prefix))
        differences[at] = f"{differences[at]}; {rows.summary()}"
    return replace(comparison, tables=tables, differences=differences)


def _not_named(error: Exception) -> RowDifferences:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return RowDifferences(None, compared=False, note=f"rows not named: {first}")
