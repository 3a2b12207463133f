"""Stage 3, restore: the dump into the target as the seed does (create, connect, restore), but
stopping at the first error (--method seed; --method stream restored during the dump stage),
then the checks and statistics every restore needs."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from checks import errors, server, statistics
from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint
from checks.evidence import Run
from checks.progress import Progress
from checks.source import Source
from fixtures.faults import TargetCopy
from fixtures.options import Settings

pytestmark = [pytest.mark.stage("restore"), pytest.mark.modes("migrate")]


@pytest.mark.methods("seed", why="--method stream: the archive was restored in the dump stage")
def test_dump_is_restored_into_target(
    source: Source,
    target: Endpoint,
    dump_file: DumpFile,
    target_copy: TargetCopy,
    run: Run,
    say: Callable[[str], None],
) -> None:
    log = dump_file.path.with_name(dump_file.path.name + ".restore.log")
    progress = Progress("restore", say, bytes_expected=dump_file.sql_bytes)
    with target_copy.guarded(progress):  # a fault drops what the restore created
        source.restore(dump_file, target, log=log, progress=progress)
    run.restore = progress.summary()


def test_target_database_holds_the_tables(target: Endpoint, settings: Settings) -> None:
    with target.connect(dbname=settings.database) as conn:
        tables = server.user_table_count(conn)
    if tables == 0:
        raise errors.RestoreFailed(f"the restored {settings.database} on the target has no table")


def test_target_statistics_are_collected(target: Endpoint, settings: Settings) -> None:
    """The dump carries no planner statistics: without ANALYZE, StackBlitz's first queries
    on the new server would be planned blind until autovacuum gets to every table. --jobs
    tables at a time (checks.statistics)."""
    statistics.analyze(functools.partial(target.connect, dbname=settings.database), settings.jobs)
