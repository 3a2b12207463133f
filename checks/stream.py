"""Streams pg_dump's archive into pg_restore, and keeps the archive as the artifact.

The outage lasts from the dump's start to the end of verification. Dumping to a file and then
restoring from it costs the sum of the two; a stream costs the longer of them. The stream is
pg_dump's custom format, uncompressed (-Fc -Z0): pg_restore loads it faster than psql loads a
plain script, and compressing on the critical path would cost more CPU than the two servers'
copy (see the benchmark). A migration may stream in parts (checks.direct: the schema, the
data in two streams at once, then indexes and constraints); the artifact is a directory of
the parts, each restorable with pg_restore, and a SHA256SUMS file (`sha256sum -c`).

Writing the artifact during the copy made the outage carry it, so the copy writes nothing: in
direct mode it only relays (`into`: pg_dump into pg_restore, or a larger table's binary COPY
between two psql, checks.tablecopy), in Kubernetes mode pg_dump feeds pg_restore inside the pod;
the artifact is dumped after verification from the copy's own snapshot, held open till then
(checks.held), so it holds the rows the target got, and written here with its SHA-256 (`keep`).

pg_restore fails on an archive that ends early (a data block it needs is missing). Whatever
else proves the stream whole (pg_dump's exit status, an in-pod checksum) runs before the sink is
closed, and a file is removed unless the restore succeeds too.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from checks import errors, private, tablecopy
from checks.dumpfile import CHUNK
from checks.progress import Progress
from checks.syncing import syncing

# Dump with -x (no grants: pg_dump leaves them out of any format); the archive still holds
# owners, and pg_restore's -O drops them as the seed's pg_dump -O does.
PG_DUMP_FLAGS = ["-Fc", "-Z0", "-x"]
# As the seed's -O -x, at restore time; -e: stop at the first error.
PG_RESTORE_FLAGS = ["-O", "-x", "--exit-on-error"]
# For the part that creates the database, as the seed's -c -C --if-exists.
CREATE_FLAGS = ["-C", "-c", "--if-exists"]


def restore_flags(*, creates: bool) -> list[str]:
    """pg_restore's flags for a part; one that `creates` the database is restored from the
    maintenance database, as the seed's psql starts there."""
    return [*(CREATE_FLAGS if creates else []), *PG_RESTORE_FLAGS]


RESTORER_WAIT_S = 120  # for a restore to fail on a cut archive before it is killed
FORMAT = "pg_dump custom archive, uncompressed (-Fc -Z0)"
_MAGIC = b"PGDMP"
_TAIL = len(tablecopy.END_MARK)  # the bytes `release` sees


class SinkStopped(Exception):
    """The restore stopped reading (pg_restore quit at an error): its own log says why."""


@dataclass(frozen=True)
class Part:
    name: str  # its file in the artifact directory
    bytes: int
    sha256: str | None  # None until the artifact is written (direct mode: checks.held)
    restore: str  # the pg_restore command that restores it by hand, without the file


@dataclass(frozen=True)
class Archive:
    path: Path  # the directory
    parts: tuple[Part, ...]

    def evidence(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": FORMAT,
            "bytes": sum(p.bytes for p in self.parts),
            "sha256": {p.name: p.sha256 for p in self.parts},
            "restore_with": [f"{p.restore} {self.path / p.name}" for p in self.parts],
        }


def artifact_path(workdir: Path, database: str, stamp: str) -> Path:
    """A new directory name per run, so that no earlier dump is ever overwritten."""
    return workdir / f"{database}-{stamp}.dump"


@contextlib.contextmanager
def artifact(final: Path) -> Iterator[Path]:
    """A private '.partial' directory for the parts, removed if the block fails."""
    partial = final.with_name(final.name + ".partial")
    try:
        partial.mkdir(mode=0o700)
    except FileExistsError as e:
        raise errors.DumpFailed(f"{partial} exists from another run: remove it first") from e
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def seal(partial: Path, final: Path, parts: list[Part]) -> Archive:
    """Write SHA256SUMS beside the parts and give the directory its final name."""
    with private.open_private(partial / "SHA256SUMS", exclusive=True) as sums:
        sums.write("".join(f"{p.sha256}  {p.name}\n" for p in parts).encode())
    partial.rename(final)
    return Archive(final, tuple(parts))


def _chunks(
    stream: BinaryIO, progress: Progress | None, copy_rows_per_byte: float | None = None
) -> Iterator[bytes]:
    """pg_dump's archive as it arrives, checked to start as one, counted by `progress`. With
    `copy_rows_per_byte`, a binary COPY's rows (checks.tablecopy) instead, whose rows are counted
    by that estimate: they are not lines."""
    first, archive = True, copy_rows_per_byte is None
    magic = _MAGIC if archive else tablecopy.SIGNATURE
    with progress.streaming() if progress else contextlib.nullcontext():
        while chunk := stream.read(CHUNK):
            if first and not chunk.startswith(magic):
                raise errors.DumpFailed(
                    "pg_dump's output is not a custom-format archive: check its log"
                    if archive
                    else "the source's COPY output is not binary COPY data: check its log"
                )
            first = False
            yield chunk
            if progress:
                progress.add(chunk, count_rows=archive)  # -Z0: COPY rows are lines in it too
                if copy_rows_per_byte:
                    progress.add_rows(round(len(chunk) * copy_rows_per_byte))
    if first:
        raise errors.DumpFailed(
            "pg_dump wrote nothing: check its log" if archive else "the source's COPY wrote nothing"
        )


def keep(
    stream: BinaryIO,
    dest: Path,
    *,
    release: Callable[[int, str], None],
    progress: Progress | None = None,
) -> tuple[int, str]:
    """Write `stream` to `dest` (mode 0600: it holds every user's data), hashing it.

    When the stream ends, `release(size, sha256)` runs: it checks whatever else proves the
    dump whole; then the file is synced. Returns its size and SHA-256; the file is removed on
    any failure. Raises DumpFailed.
    """
    try:
        out = private.open_private(dest, exclusive=True)
    except FileExistsError as e:
        raise errors.DumpFailed(f"{dest} exists from another run: remove it first") from e
    digest = hashlib.sha256()
    size = 0
    try:
        with out, syncing(out):
            for chunk in _chunks(stream, progress):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            release(size, digest.hexdigest())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def relay(
    stream: BinaryIO,
    sink: BinaryIO,
    *,
    release: Callable[[int, bytes], None],
    progress: Progress | None = None,
    copy_rows_per_byte: float | None = None,
) -> int:
    """Copy `stream` into `sink` (a restore's stdin); `release(size, last bytes)` runs when the
    stream ends, as in `keep`, before the sink is closed. Returns the size. Raises DumpFailed or
    SinkStopped."""
    size, tail = 0, b""
    for chunk in _chunks(stream, progress, copy_rows_per_byte):
        size += len(chunk)
        tail = (tail + chunk[-_TAIL:])[-_TAIL:]  # not the whole chunk: this is per MB
        try:
            sink.write(chunk)
        except BrokenPipeError:
            raise SinkStopped() from None
    release(size, tail)
    return size


def into(
    dump_out: BinaryIO,
    restorer: subprocess.Popen[bytes],
    *,
    check: Callable[[bytes], None],
    abort: Callable[[], object],
    failed: Callable[[int], errors.RestoreFailed],
    progress: Progress | None = None,
    copy_rows_per_byte: float | None = None,
) -> int:
    """Relay a running dump into a running restore (its stdin a pipe); the bytes relayed once
    both succeed. No file is written: direct mode's artifact is dumped after verification from
    the same snapshot (checks.held).

    `check(last bytes)` proves the dump's side whole once its output ends (pg_dump's exit
    status) and `abort()` stops it; `failed(exit code)` is the restore's error. With
    `copy_rows_per_byte` the stream is a binary COPY's rows (checks.tablecopy), not an archive.
    """
    assert restorer.stdin
    sink = restorer.stdin

    def release(_size: int, tail: bytes) -> None:
        check(tail)
        with contextlib.suppress(BrokenPipeError):
            sink.close()

    try:
        size = relay(
            dump_out,
            sink,
            release=release,
            progress=progress,
            copy_rows_per_byte=copy_rows_per_byte,
        )
    except SinkStopped:
        abort()
        raise failed(restorer.wait()) from None
    except errors.DumpFailed:
        # The archive is self-delimiting: at the end of its input pg_restore fails on the cut
        # archive rather than finishing it. It is waited for, not killed, so that once this
        # returns nothing more can be created on the target and the caller's cleanup sees all
        # there is.
        # A COPY's rows are not: cut between two rows they would end as a whole COPY. Its psql
        # is killed instead, so that its transaction rolls back.
        abort()
        if copy_rows_per_byte is not None:
            restorer.kill()
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
        raise failed(code)
    return size
