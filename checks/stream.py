"""Streams pg_dump's archive into pg_restore while keeping it, byte for byte, as the artifact.

The outage lasts from the dump's start to the end of verification. Dumping to a file and then
restoring from it costs the sum of the two; a stream costs the longer of them. The stream is
pg_dump's custom format, uncompressed (-Fc -Z0): pg_restore loads it faster than psql loads a
plain script, and compressing on the critical path would cost more CPU than the two servers'
copy (see the benchmark). The artifact restores with `pg_restore -C -d postgres FILE`, and its
SHA-256 is of exactly the bytes the target's pg_restore read.

pg_restore fails on an archive that ends early (a data block it needs is missing). Whatever
else proves the stream whole (pg_dump's exit status, an in-pod checksum) runs before the sink is
closed, and the file is removed unless the restore succeeds too.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from checks import errors, private
from checks.dumpfile import CHUNK
from checks.progress import Progress
from checks.syncing import syncing

# Dump with -x (no grants: pg_dump leaves them out of any format); the archive still holds
# owners, and pg_restore's -O drops them as the seed's pg_dump -O does.
PG_DUMP_FLAGS = ["-Fc", "-Z0", "-x"]
# As the seed's -c -C --if-exists -O -x, at restore time; -e: stop at the first error.
PG_RESTORE_FLAGS = ["-C", "-c", "--if-exists", "-O", "-x", "--exit-on-error"]
RESTORER_WAIT_S = 120  # for a restore to fail on a cut archive before it is killed
FORMAT = "pg_dump custom archive, uncompressed (-Fc -Z0)"
_MAGIC = b"PGDMP"


class SinkStopped(Exception):
    """The restore stopped reading (pg_restore quit at an error): its own log says why."""


@dataclass(frozen=True)
class Archive:
    path: Path
    bytes: int
    sha256: str

    def evidence(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": FORMAT,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "restore_with": f"pg_restore {' '.join(PG_RESTORE_FLAGS)} -d postgres {self.path}",
        }


def artifact_path(workdir: Path, database: str, stamp: str) -> Path:
    """A new file name per run, so that no earlier dump is ever overwritten."""
    return workdir / f"{database}-{stamp}.dump"


def tee(
    stream: BinaryIO,
    dest: Path,
    sink: BinaryIO | None,
    *,
    release: Callable[[str], None],
    progress: Progress | None = None,
) -> Archive:
    """Copy `stream` to `dest` (mode 0600: it holds every user's data) and to `sink`, if any.

    When the stream ends, `release(its sha256)` runs: it checks whatever else proves the dump
    and only then closes the sink, so the restore may finish. The file is then synced and
    renamed from its '.partial' name. Raises DumpFailed (the sink still open: see `into`) or
    SinkStopped.
    """
    partial = dest.with_name(dest.name + ".partial")
    try:
        out = private.open_private(partial, exclusive=True)
    except FileExistsError as e:
        raise errors.DumpFailed(f"{partial} exists from another run: remove it first") from e
    digest = hashlib.sha256()
    size = 0
    try:
        with out, syncing(out):
            while chunk := stream.read(CHUNK):
                if size == 0 and not chunk.startswith(_MAGIC):
                    raise errors.DumpFailed(
                        "pg_dump's output is not a custom-format archive: check its log"
                    )
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
                try:
                    if sink:
                        sink.write(chunk)
                except BrokenPipeError:
                    raise SinkStopped() from None
                if progress:
                    progress.add(chunk)  # -Z0: COPY rows are lines in the archive too
            if size == 0:
                raise errors.DumpFailed("pg_dump wrote nothing: check its log")
            release(digest.hexdigest())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(dest)
    return Archive(dest, size, digest.hexdigest())


def into(
    dump_out: BinaryIO,
    dest: Path,
    restorer: subprocess.Popen[bytes],
    *,
    check: Callable[[str], None],
    abort: Callable[[], object],
    failed: Callable[[int], errors.RestoreFailed],
    progress: Progress | None = None,
) -> Archive:
    """Tee a running dump into a running restore (its stdin a pipe); the archive once both
    succeed.

    `check(sha256)` proves the dump's side whole once its output ends (pg_dump's exit status, an
    in-pod checksum) and `abort()` stops it; `failed(exit code)` is the restore's error.
    """
    assert restorer.stdin
    sink = restorer.stdin

    def release(sha256: str) -> None:
        check(sha256)
        with contextlib.suppress(BrokenPipeError):
            sink.close()

    try:
        archive = tee(dump_out, dest, sink, release=release, progress=progress)
    except SinkStopped:
        abort()
        raise failed(restorer.wait()) from None
    except errors.DumpFailed:
        # The archive is self-delimiting: at the end of its input pg_restore fails on the cut
        # archive rather than finishing it. It is waited for, not killed, because a kubectl exec
        # returns only when the pod's pg_restore has ended: after that nothing more can be
        # created on the target, and the caller's cleanup sees all there is.
        abort()
        with contextlib.suppress(BrokenPipeError):
            sink.close()
        try:
            restorer.wait(timeout=RESTORER_WAIT_S)
        except subprocess.TimeoutExpired:
            restorer.kill()
            restorer.wait()
        raise
    code = restorer.wait()
    if code != 0:
        dest.unlink(missing_ok=True)  # not proven whole: pg_restore fails on a cut archive
        raise failed(code)
    return archive
