"""A copy into the target (the stream, or --method seed's restore) as one guarded step.

While it runs, the database it creates is marked unverified (checks.marker) and the bytes are
watched for stalls (checks.stall). On any fault, an error or a signal alike, every child is
stopped, what the copy created on the target is dropped when the target can be reached (a
marked partial copy stays behind when it cannot), and the error is re-raised as one line that
says what happened, what became of the target and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from checks import children, errors, interrupt, marker, restore, stall
from checks.endpoint import Endpoint
from checks.progress import Progress


@contextlib.contextmanager
def guarded(
    target: Endpoint,
    database: str,
    *,
    run: str,
    restorer: str,
    progress: Progress,
    stall_s: float,
    workdir: Path,
    needed_bytes: int | None,
    note: Callable[[str], None],
) -> Iterator[None]:
    """Run the copy in the block; `note` receives what the cleanup did, for the evidence."""
    before = restore.database_oid(target, database)
    watchdog = stall.Watchdog(progress, stall_s)
    try:
        with (
            watchdog,
            marker.watching(
                target.with_dbname(restore.MAINTENANCE_DB), database, before=before, run=run
            ),
        ):
            yield
    except BaseException as e:
        with interrupt.deferred():  # a Ctrl-C now waits for the cleanup, bounded as it is
            children.stop_all()
            cleanup = restore.drop_partial(target, database, before, restorer=restorer)
            note(cleanup)
        if isinstance(e, KeyboardInterrupt):
            raise  # a signal: the run's one line names it (fixtures.faults)
        explained = explain(e, workdir=workdir, needed_bytes=needed_bytes, stalled=watchdog)
        if explained is None:
            raise
        raise type(explained)(f"{explained}; {cleanup}") from None


def explain(
    e: BaseException,
    *,
    workdir: Path,
    needed_bytes: int | None,
    stalled: stall.Watchdog | None = None,
) -> errors.MigrationError | None:
    """A fault of the environment as one of our one-line errors; None for a bug (a traceback
    is then what helps)."""
    if stalled is not None and stalled.fired:
        return errors.Stalled(stalled.message())
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return workdir_full(workdir, needed_bytes)
    if isinstance(e, errors.MigrationError):
        return e
    if isinstance(e, psycopg.Error):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return errors.ConnectionFailed(f"a server stopped answering: {first}")
    if isinstance(e, OSError):
        return errors.DumpFailed(f"{e.strerror or e} ({e.filename or workdir}): check the workdir")
    return None


RUN_AGAIN = "free space or pass --workdir on a larger disk, then run the same command again"


def workdir_full(
    workdir: Path, needed_bytes: int | None, then: str = RUN_AGAIN
) -> errors.WorkdirFull:
    free = shutil.disk_usage(workdir).free
    needed = f", the dump needed about {needed_bytes / 1e6:,.0f} MB" if needed_bytes else ""
    return errors.WorkdirFull(
        f"the workdir filesystem is full ({workdir}: {free / 1e6:,.0f} MB free{needed}): {then}"
    )
