"""--method seed: writes pg_dump's plain script to a gzip file in one pass, proves it whole."""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from pathlib import Path
from typing import BinaryIO

from checks import dumpfile, errors, private
from checks.progress import Progress
from checks.syncing import syncing

# The seed's flags: --if-exists -c (drop before create), -C (create and connect), -x (no
# grants), -O (no ownership): a managed admin role is not a superuser.
PG_DUMP_FLAGS = ["--if-exists", "-xcCO"]
# gzip level 1: any level reads back the same with zcat, and level 6 (gzip's default) costs
# several times the CPU for a file about 20% smaller; the dump is on the critical path.
GZIP_LEVEL = 1


def dump_path(workdir: Path, database: str, stamp: str) -> Path:
    """A new file name per run, so that no earlier dump is ever overwritten."""
    return workdir / f"{database}-{stamp}.sql.gz"


def write_dump(stream: BinaryIO, dest: Path, progress: Progress | None = None) -> dumpfile.DumpFile:
    """Compress `stream` into `dest` (mode 0600: it holds every user's data) and check it.

    The data goes to `dest` + '.partial' first and is renamed only once the script is proven
    whole, so an interrupted dump never leaves a file that looks like a dump.
    """
    partial = dest.with_name(dest.name + ".partial")
    try:
        out = private.open_private(partial, exclusive=True)
    except FileExistsError as e:
        raise errors.DumpFailed(f"{partial} exists from another run: remove it first") from e
    file_hash, sql_hash = hashlib.sha256(), hashlib.sha256()
    edges = dumpfile.EdgeKeeper()
    size = sql_size = 0
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    try:
        with out, syncing(out), progress.streaming() if progress else contextlib.nullcontext():
            while chunk := stream.read(dumpfile.CHUNK):
                sql_hash.update(chunk)
                edges.feed(chunk)
                sql_size += len(chunk)
                if progress:
                    progress.add(chunk)
                packed = deflater.compress(chunk)
                file_hash.update(packed)
                size += len(packed)
                out.write(packed)
            packed = deflater.flush()
            file_hash.update(packed)
            size += len(packed)
            out.write(packed)
        restricted = dumpfile.check_script_edges(edges.head, edges.tail)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(dest)
    return dumpfile.DumpFile(
        dest, size, file_hash.hexdigest(), sql_size, sql_hash.hexdigest(), restricted
    )
