"""Stage 4, verify: the target holds what the source holds, table by table and object by object.

Row counts and a content digest of every table and materialized view, every sequence's value,
every large object, and the schema; ownership and grants are left out, as `-O -x` drops them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from checks import data, errors, marker, rowdiff, rowdigest, schema
from checks.endpoint import Endpoint
from checks.evidence import Run
from checks.restore import MAINTENANCE_DB
from checks.source import Source
from fixtures.options import Settings

SHOWN = 20  # differences named in the one-line failure; evidence.json has them all
pytestmark = [pytest.mark.stage("verify"), pytest.mark.modes("migrate", "verify-only")]


def test_data_matches(
    source: Source,
    target: Endpoint,
    settings: Settings,
    run: Run,
    row_digest: rowdigest.RowDigest,
    say: Callable[[str], None],
) -> None:
    connect_target = functools.partial(target.connect, dbname=settings.database)
    if run.early is not None and run.early.started:
        # Most of both sides was digested while the copy ran: re-confirm, finish (checks.overlap).
        src, dst, run.verification = run.early.finish(source.connect, connect_target)
    else:
        src, dst = data.snapshot_both(source.connect, connect_target, say, row_digest=row_digest)
    run.comparison = data.compare(src, dst)
    if not run.comparison.equal:
        # Only now, and only for the tables that differ: which rows (by key) and columns.
        run.comparison = rowdiff.explain(
            run.comparison, src, dst, source.connect, connect_target, say
        )
        raise errors.VerificationFailed(_listing("data", run.comparison.differences))


def test_schema_matches(source: Source, target: Endpoint, settings: Settings, run: Run) -> None:
    with source.connect() as conn:
        src = schema.snapshot(conn)
    with target.connect(dbname=settings.database) as conn:
        dst = schema.snapshot(conn)
    run.schema_differences = schema.compare(src, dst)
    run.schema_objects = len(src)
    if run.schema_differences:
        raise errors.VerificationFailed(_listing("schema", run.schema_differences))


def test_target_is_no_longer_marked_unverified(
    source: Source, target: Endpoint, settings: Settings, run: Run
) -> None:
    """The copy was marked unverified when it was created (checks.marker); the mark comes off
    only here, once data and schema match, and the source's own comment on the database takes
    its place. --verify-only refuses a marked database: it is a copy a run did not finish."""
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        found = marker.state(conn, settings.database)
        mark = found[1] if found else None
        if not marker.is_ours(mark):
            return
        if settings.mode != "migrate":
            raise errors.VerificationFailed(
                f"the target's {settings.database} is marked as an unverified partial copy "
                f"({mark}): run the migration again; do not point StackBlitz at it"
            )
        if not (run.comparison and run.comparison.equal and run.schema_differences == []):
            raise errors.VerificationFailed(
                f"the target's {settings.database} stays marked unverified: it was not shown "
                "to match the source (see above)"
            )
        with source.connect() as src:
            original = marker.state(src, settings.database)
        marker.comment(conn, settings.database, original[1] if original else None)
    run.preflight["target_marker"] = "removed after verification"


def _listing(what: str, differences: list[str]) -> str:
    shown = "; ".join(differences[:SHOWN])
    more = (
        f"; and {len(differences) - SHOWN} more in evidence.json"
        if len(differences) > SHOWN
        else ""
    )
    return f"{len(differences)} {what} difference(s): {shown}{more}"
