"""Planner statistics for the restored database: ANALYZE of every table, several at once.

The dump carries no statistics, and ANALYZE of a whole database works through its tables one
by one; each table's ANALYZE reads a sample of its pages, so on a host with cores to spare
several tables are analyzed at once (largest first), which shortens the outage by up to the
jobs' factor of the time a database-wide ANALYZE takes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

CANCEL_S = 15

# Partitioned tables too: a database-wide ANALYZE collects their statistics over all partitions.
_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY pg_total_relation_size(c.oid) DESC, 1, 2
"""


def analyze(connect: Callable[[], psycopg.Connection], jobs: int) -> int:
    """ANALYZE every table of the database `connect` reaches, `jobs` at a time; how many."""
    with connect() as conn:
        tables = [sql.Identifier(s, n) for s, n in conn.execute(_TABLES).fetchall()]
    opened: list[psycopg.Connection] = []
    pending = list(reversed(tables))  # pop() takes the largest first

    def work() -> None:
        with connect() as conn:
            opened.append(conn)
            while pending:
                try:
                    table = pending.pop()
                except IndexError:
                    return
                conn.execute(sql.SQL("ANALYZE {}").format(table))

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tables)))) as pool:
        runs = [pool.submit(work) for _ in range(max(1, min(jobs, len(tables))))]
        try:
            for run in runs:
                run.result()
        except BaseException:
            # A signal, or one failing: the others' ANALYZE is cancelled, not waited for.
            deadline = time.monotonic() + CANCEL_S
            while not all(r.done() for r in runs) and time.monotonic() < deadline:
                for conn in list(opened):
                    with contextlib.suppress(psycopg.Error):
                        conn.cancel_safe(timeout=2)
                futures.wait(runs, timeout=0.5)
            raise
    return len(tables)
