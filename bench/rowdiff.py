"""`python -m bench.rowdiff --size-gb 1 [--changed 10] [--json FILE]`: what naming rows costs.

On a generated source and an exact copy on the target server (`pg_dump -Fc | pg_restore -C`),
times the verification's whole-table pass (checks/data.py, both servers at
once) on the matching database, where no row is narrowed; then changes `--changed` rows of the
largest table on the target (one byte of their content each, spread over the key range) and
times the whole-table pass again and the narrowing that names the rows (checks/rowdiff.py).
Prints the figures and the ratio narrowing / whole-table pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from checks import data, pgtools, rowdiff, rowdigest
from fixtures import pgserver, sample_db

DB = sample_db.DATABASE
LARGEST = "project_files"  # the sample's largest table (its file contents)


def _connect(server: pgserver.Server):  # type: ignore[no-untyped-def]
    return lambda: psycopg.connect(**server.connect_kwargs(DB))


def _verify(src: pgserver.Server, dst: pgserver.Server) -> tuple[float, float, data.Comparison]:
    """The whole-table pass and, where it finds differences, the narrowing: seconds of each."""
    with _connect(src)() as s, _connect(dst)() as d:  # as the runbook's preflight decides
        row_digest = rowdigest.decide(s, d).digest
    started = time.monotonic()
    before = data.snapshot_both(_connect(src), _connect(dst), row_digest=row_digest)
    comparison = data.compare(*before)
    whole = time.monotonic() - started
    started = time.monotonic()
    explained = rowdiff.explain(comparison, *before, _connect(src), _connect(dst))
    return whole, time.monotonic() - started, explained


def _copy(src: pgserver.Server, dst: pgserver.Server, tools: pgtools.Toolset) -> None:
    """The whole database, sequences and large objects too, into a new database on `dst`."""
    pg_dump = subprocess.Popen(
        [tools.path("pg_dump"), "-Fc", "-Z0", "-d", src.dsn(DB)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PGPASSWORD": src.password},
    )
    subprocess.run(
        [tools.path("pg_restore"), "-C", "--exit-on-error", "-d", dst.dsn("postgres")],
        stdin=pg_dump.stdout,
        env={**os.environ, "PGPASSWORD": dst.password},
        check=True,
    )
    if pg_dump.wait() != 0:
        raise SystemExit("bench: pg_dump failed")


def _change_rows(dst: pgserver.Server, count: int) -> list[int]:
    """Flip one byte in `count` rows of the largest table, spread evenly over its ids."""
    with psycopg.connect(**dst.connect_kwargs(DB), autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT min(id) FROM (SELECT id, ntile(%s) OVER (ORDER BY id) AS part "
                "FROM project_files WHERE octet_length(content) > 0) s GROUP BY part ORDER BY 1",
                [count],
            )
        ]
        conn.execute(
            "UPDATE project_files SET content = set_byte(content, 0, 255 - get_byte(content, 0)) "
            "WHERE id = ANY(%s)",
            [ids],
        )
    return ids


def measure(size_gb: float, changed: int, source_version: int, target_version: int) -> dict:  # type: ignore[type-arg]
    tools = pgtools.for_migration(source_version, target_version)
    with (
        pgserver.running_server(source_version) as src,
        pgserver.running_server(target_version) as dst,
    ):
        with psycopg.connect(**src.connect_kwargs(), autocommit=True) as admin:
            sample_db.create_database(admin, DB)
        with psycopg.connect(**src.connect_kwargs(DB)) as conn:
            sample_db.seed(conn, size_bytes=int(size_gb * 1e9))
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
            rows = conn.execute(f"SELECT count(*) FROM {LARGEST}").fetchone()[0]  # type: ignore[index]
        print(f"bench: generated {db_bytes / 1e6:,.0f} MB, {LARGEST} {rows:,} rows", flush=True)
        _copy(src, dst, tools)
        with psycopg.connect(**dst.connect_kwargs(DB), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # as the runbook's restore leaves it: analyzed
        whole_matching, narrowing_matching, matching = _verify(src, dst)
        print(
            f"bench: matching database: whole-table pass {whole_matching:.1f} s, "
            f"narrowing {narrowing_matching:.3f} s (equal: {matching.equal})",
            flush=True,
        )
        ids = _change_rows(dst, changed)
        whole, narrowing, found = _verify(src, dst)
        table = next(t for t in found.tables if t["name"] == LARGEST)
        named = sorted(int(r["key"]["id"]) for r in table["row_differences"])  # type: ignore[index]
        print(
            f"bench: {changed} rows changed in {LARGEST}: whole-table pass {whole:.1f} s, "
            f"narrowing {narrowing:.1f} s ({narrowing / whole:.0%} of the pass), "
            f"named {len(named)} rows, all of them: {named == sorted(ids)}",
            flush=True,
        )
    return {
        "size_gb": size_gb,
        "database_bytes": db_bytes,
        "largest_table": LARGEST,
        "largest_table_rows": rows,
        "changed_rows": changed,
        "matching": {
            "whole_table_pass_s": round(whole_matching, 2),
            "narrowing_s": round(narrowing_matching, 3),
        },
        "changed": {
            "whole_table_pass_s": round(whole, 2),
            "narrowing_s": round(narrowing, 2),
            "narrowing_over_whole_table_pass": round(narrowing / whole, 2),
            "rows_named": len(named),
            "all_changed_rows_named": named == sorted(ids),
            "row_narrowing": table["row_narrowing"],
        },
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rowdiff", description=__doc__)
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--changed", type=int, default=10, help="rows to change in the largest table")
    p.add_argument("--source-version", type=int, default=15)
    p.add_argument("--target-version", type=int, default=18)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    a = p.parse_args(argv)
    result = measure(a.size_gb, a.changed, a.source_version, a.target_version)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
