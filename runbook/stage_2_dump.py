"""Stage 2, dump: the seed's `pg_dump --if-exists -xcCO` into the workdir, proven whole
(trailer, \\restrict pair) with its size and SHA-256 recorded.

--method stream (the default) dumps pg_dump's custom archives (checks.stream, in the parts of
checks.parts in direct mode, one stream inside the pod in Kubernetes mode) into pg_restore on
the target, so the outage lasts the longer of dump and restore, not their sum; nothing else is
written: the artifact is dumped again after verification, off the outage, from the copy's
snapshot, held open till then (stage 6, checks.held);
--method seed writes the seed's gzip plain script first and restores it in stage 3, as the
documented procedure does.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from checks import (
    children,
    data,
    dump,
    dumpfile,
    errors,
    kube,
    overlap,
    partial,
    preflight,
    server,
    stream,
)
from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint
from checks.evidence import Run
from checks.kubernetes import KubernetesSource
from checks.progress import Progress
from checks.rowdigest import RowDigest
from checks.source import Source
from fixtures.faults import TargetCopy
from fixtures.options import Settings

pytestmark = [pytest.mark.stage("dump"), pytest.mark.modes("migrate")]


@pytest.mark.sources("kubernetes", why="direct mode: StackBlitz is stopped by hand")
@pytest.mark.flag("stop_app", why="no --stop-app: StackBlitz's workloads were left running")
def test_stackblitz_is_stopped(source: Source, settings: Settings, run: Run) -> None:
    """--stop-app: no StackBlitz pod may write after the dump, or its writes would be lost."""
    assert isinstance(source, KubernetesSource)
    namespace = source.pod.namespace
    running = [e for e in run.workloads or [] if int(str(e["replicas"]))]
    workloads = [
        kube.Workload(str(e["kind"]), str(e["name"]), int(str(e["replicas"]))) for e in running
    ]
    for workload, entry in zip(workloads, running):
        kube.scale(source.kube, namespace, workload, 0)
        entry["stopped"] = True  # from here on its command to start again is printed
    for workload in workloads:
        kube.wait_stopped(source.kube, namespace, workload)
    # A stopped pod's session ends when the server notices its client is gone: give it a moment.
    deadline = time.monotonic() + 30
    while True:
        with source.connect() as conn:
            sessions = server.other_sessions(conn, settings.database)
        if not sessions or time.monotonic() > deadline:
            break
        time.sleep(1)
    run.preflight["source_sessions_after_stop"] = len(sessions)
    preflight.other_sessions(sessions, settings.database, allow=settings.allow_active_connections)


@pytest.mark.methods("seed", why="--method stream: the dump is restored as it is taken")
def test_dump_is_taken(
    source: Source,
    target_info: server.ServerInfo,
    settings: Settings,
    run: Run,
    say: Callable[[str], None],
) -> None:
    """--method seed: the gzip dump file, before anything touches the target."""
    dest = dump.dump_path(settings.workdir, settings.database, settings.stamp)
    progress = Progress("dump", say, rows_expected=_rows(source))
    try:
        with children.stopped_on_error():
            run.dump_file = source.dump(dest, target_major=target_info.major, progress=progress)
    except OSError as e:
        workdir = run.preflight.get("workdir") or {}
        needed = workdir.get("needed_bytes") if isinstance(workdir, dict) else None
        explained = partial.explain(e, workdir=settings.workdir, needed_bytes=needed)
        if explained is None:
            raise
        raise explained from None
    run.dump = {"method": "seed", **run.dump_file.evidence(), **progress.summary()}
    run.tools = source.tool_versions()


@pytest.mark.methods("stream", why="--method seed: the dump file is restored in stage 3")
def test_dump_is_streamed_into_target(
    source: Source,
    target: Endpoint,
    target_info: server.ServerInfo,
    target_copy: TargetCopy,
    settings: Settings,
    run: Run,
    row_digest: RowDigest,
    say: Callable[[str], None],
) -> None:
    """--method stream: pg_dump's archive into the target's pg_restore; the artifact is dumped
    from the same snapshot in stage 6."""
    final = stream.artifact_path(settings.workdir, settings.database, settings.stamp)
    log = final.with_name(final.name + ".restore")
    progress = Progress("dump → target", say, rows_expected=_rows(source))
    # The restore's sessions carry this name: the target's DBA can see them, and a failure
    # can wait for them to end.
    restoring = replace(target, params={**target.params, "application_name": target_copy.restorer})
    # With --verify-during-copy, verification's scans of both sides start while the copy runs;
    # stage 4 re-confirms them and gives the verdict (checks.overlap). Off by default: where the
    # copy already keeps every core busy (both servers on the runbook's host, as in the bench)
    # the scans slow the copy more than they save.
    run.early = (
        overlap.Early(
            functools.partial(restoring.connect, dbname=settings.database),
            say,
            row_digest=row_digest,
        )
        if settings.verify_during_copy
        else None
    )
    try:
        # On any fault, what the stream left on the target is dropped (a second attempt would
        # find it and refuse, and StackBlitz must never be pointed at it): checks.partial.
        with target_copy.guarded(progress):
            source.stream(
                restoring,
                target_major=target_info.major,
                log=log,
                progress=progress,
                early=run.early,
            )
    finally:
        run.tools = source.tool_versions()
    # Dumped from the copy's held snapshot after verification, off the outage (stage 6).
    pending = {"path": str(final), "format": stream.FORMAT, **source.kept_evidence()}
    run.dump = {"method": "stream", **pending, **progress.summary()}


@pytest.mark.methods("seed", why="--method stream: pg_restore read the archive as it was dumped")
def test_dump_file_on_disk_is_whole(dump_file: DumpFile) -> None:
    """--method seed: the file is read back before the restore may trust it."""
    on_disk = dumpfile.inspect(dump_file.path)
    if on_disk.sha256 != dump_file.sha256:
        raise errors.DumpFailed(
            f"{on_disk.path} changed after it was written (SHA-256 {on_disk.sha256}, written "
            f"{dump_file.sha256}): take the dump again"
        )


def _rows(source: Source) -> int:
    with source.connect() as conn:
        return data.estimated_rows(conn)
