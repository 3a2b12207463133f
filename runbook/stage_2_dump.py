"""Stage 2, dump: the seed's `pg_dump --if-exists -xcCO`, gzip-compressed into the workdir,
proven whole (trailer, \\restrict pair) with its size and SHA-256 recorded."""

from __future__ import annotations

import time

import pytest

from checks import dump, dumpfile, errors, kube, preflight, server
from checks.dumpfile import DumpFile
from checks.evidence import Run
from checks.kubernetes import KubernetesSource
from checks.source import Source
from fixtures.options import Settings

pytestmark = [pytest.mark.stage("dump"), pytest.mark.modes("migrate")]


def test_stackblitz_is_stopped(source: Source, settings: Settings, run: Run) -> None:
    """--stop-app: no StackBlitz pod may write after the dump, or its writes would be lost."""
    if not isinstance(source, KubernetesSource) or not settings.stop_app:
        pytest.skip("no --stop-app (Kubernetes mode): StackBlitz's workloads were left running")
    namespace = source.pod.namespace
    running = [e for e in run.workloads or [] if int(str(e["replicas"]))]
    workloads = [
        kube.Workload(str(e["kind"]), str(e["name"]), int(str(e["replicas"]))) for e in running
    ]
    for workload in workloads:
        kube.scale(source.kube, namespace, workload, 0)
    for workload, entry in zip(workloads, running, strict=True):
        kube.wait_stopped(source.kube, namespace, workload)
        entry["stopped"] = True
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


def test_dump_is_taken(
    source: Source, target_info: server.ServerInfo, settings: Settings, run: Run
) -> None:
    dest = dump.dump_path(settings.workdir, settings.database, settings.stamp)
    run.dump_file = source.dump(dest, target_major=target_info.major)
    run.dump = run.dump_file.evidence()
    run.tools = source.tool_versions()


def test_dump_file_on_disk_is_whole(dump_file: DumpFile) -> None:
    on_disk = dumpfile.inspect(dump_file.path)
    if on_disk.sha256 != dump_file.sha256:
        raise errors.DumpFailed(
            f"{on_disk.path} changed after it was written (SHA-256 {on_disk.sha256}, written "
            f"{dump_file.sha256}): take the dump again"
        )
