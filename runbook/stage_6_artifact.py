"""Stage 6, artifact (--method stream): the archive of the copy, written to the workdir after
verification, off the outage, with its SHA-256 in SHA256SUMS. It is dumped again from the copy's
own snapshot, held open since the copy (checks.held), so it holds the rows the target was loaded
with; the snapshot is then released.
- Direct mode: every part, --jobs at a time, by this host's pg_dump.
- Kubernetes mode: by the pod's pg_dump, out through kubectl exec, its byte count in the pod
  proving the copy here whole (one more try on a cut stream).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from checks import partial, stream
from checks.evidence import Run
from checks.kubernetes import KubernetesSource
from checks.progress import Progress
from checks.source import Source
from fixtures.options import Settings

# The migration itself is done when this stage runs: rerunning the runbook would refuse the
# verified target, so the way out is an archive taken by hand.
ONLY_THE_ARCHIVE = (
    "the target is verified and kept, only its archive is missing: free space, then take one "
    "by hand (pg_dump -Fc of the target) if the change needs it"
)

pytestmark = [
    pytest.mark.stage("artifact"),
    pytest.mark.modes("migrate"),
    pytest.mark.methods("stream", why="--method seed: the dump file came out before the restore"),
]


def test_artifact_is_in_the_workdir_with_its_checksums(
    source: Source, settings: Settings, run: Run, say: Callable[[str], None]
) -> None:
    assert run.dump is not None and source.kept
    final = stream.artifact_path(settings.workdir, settings.database, settings.stamp)
    label = "artifact ← pod" if isinstance(source, KubernetesSource) else "artifact ← source"
    progress = Progress(label, say, bytes_expected=sum(p.bytes for p in source.kept))
    try:
        with stream.artifact(final) as directory:
            parts = source.fetch_kept(directory, progress=progress)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        workdir = run.preflight.get("workdir") or {}
        needed = workdir.get("needed_bytes") if isinstance(workdir, dict) else None
        raise partial.workdir_full(settings.workdir, needed, ONLY_THE_ARCHIVE) from None
    archive = stream.seal(directory, final, parts)
    source.remove_kept()
    run.dump.update(archive.evidence())
    run.dump.update(written=True, snapshot=source.artifact_snapshot, write=progress.summary())
