"""Stage 6, artifact (Kubernetes mode, --method stream): the archive kept in the pod during the
copy (checks.podcopy) is fetched to the workdir after verification, off the outage, and proven to
be the bytes the target's pg_restore read: its SHA-256 here is the one the pod computed as they
passed. The pod's copy is then removed. When preflight found no room in the pod, the archive
came out during the copy and is already in the workdir.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from checks import errors, stream
from checks.evidence import Run
from checks.kubernetes import KubernetesSource
from checks.progress import Progress
from checks.source import Source
from fixtures.options import Settings

pytestmark = [
    pytest.mark.stage("artifact"),
    pytest.mark.modes("migrate"),
    pytest.mark.sources("kubernetes", why="direct mode: the archive is written on this host"),
    pytest.mark.methods("stream", why="--method seed: the dump file came out before the restore"),
]


def test_artifact_is_in_the_workdir_with_its_checksums(
    source: Source, settings: Settings, run: Run, say: Callable[[str], None]
) -> None:
    assert isinstance(source, KubernetesSource) and run.dump is not None
    if not source.kept:
        if run.dump.get("fetched") is False:  # kept, but the pod no longer holds it
            raise errors.DumpFailed("the archive kept in the pod is gone: take a dump again")
        return  # streamed out during the copy: sealed in the dump stage
    final = stream.artifact_path(settings.workdir, settings.database, settings.stamp)
    progress = Progress("artifact ← pod", say, bytes_expected=sum(p.bytes for p in source.kept))
    with stream.artifact(final) as directory:
        parts = source.fetch_kept(directory, progress=progress)
    archive = stream.seal(directory, final, parts)
    removed = source.remove_kept()
    run.dump.update(archive.evidence())
    run.dump.update(fetched=True, fetch=progress.summary(), pod_copy=removed)
