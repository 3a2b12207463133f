"""Stage 2, dump: the seed's `pg_dump --if-exists -xcCO`, gzip-compressed into the workdir,
proven whole (trailer, \\restrict pair) with its size and SHA-256 recorded."""

from __future__ import annotations

import pytest

from checks import dump, dumpfile, errors, server
from checks.evidence import Run
from checks.source import Source
from fixtures.options import Settings

pytestmark = [pytest.mark.stage("dump"), pytest.mark.modes("migrate")]


def test_dump_is_taken(
    source: Source, target_info: server.ServerInfo, settings: Settings, run: Run
) -> None:
    dest = dump.dump_path(settings.workdir, settings.database, settings.stamp)
    run.dump_file = source.dump(dest, target_major=target_info.major)
    run.dump = run.dump_file.evidence()
    run.tools = source.tool_versions()


def test_dump_file_on_disk_is_whole(run: Run) -> None:
    assert run.dump_file is not None
    on_disk = dumpfile.inspect(run.dump_file.path)
    if on_disk.sha256 != run.dump_file.sha256:
        raise errors.DumpFailed(
            f"{on_disk.path} changed after it was written (SHA-256 {on_disk.sha256}, written "
            f"{run.dump_file.sha256}): take the dump again"
        )
