"""Proves a gzip-compressed plain-SQL dump is whole: gzip intact, pg_dump's trailer present."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from checks import errors

HEADER = b"--\n-- PostgreSQL database dump\n--\n"
TRAILER = b"-- PostgreSQL database dump complete"
# pg_dump 17.6/16.10/15.14/14.19/13.22 and later bracket the script with a random key.
_RESTRICT = re.compile(rb"^\\restrict ([A-Za-z0-9]+)\s*$", re.MULTILINE)
_UNRESTRICT = re.compile(rb"^\\unrestrict ([A-Za-z0-9]+)\s*$", re.MULTILINE)
EDGE = 64 * 1024  # how much of each end of the script the checks need
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DumpFile:
    path: Path
    bytes: int  # compressed, on disk
    sha256: str  # of the file on disk
    sql_bytes: int  # the SQL script pg_dump wrote
    sql_sha256: str
    restricted: bool  # carries the \restrict / \unrestrict pair

    def evidence(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "sql_bytes": self.sql_bytes,
            "sql_sha256": self.sql_sha256,
            "restricted": self.restricted,
        }


def check_script_edges(head: bytes, tail: bytes) -> bool:
    """Raise DumpFailed unless the script's first and last bytes are those of a whole dump.

    Returns whether the script uses \\restrict. A dump cut anywhere loses the trailer, and a
    restricted dump cut after the trailer loses its \\unrestrict line.
    """
    if not head.startswith(HEADER) and not head.startswith(b"\\restrict "):
        raise errors.DumpFailed("the dump does not start like a pg_dump plain script")
    if TRAILER not in tail:
        raise errors.DumpFailed(
            "the dump is incomplete: pg_dump's '-- PostgreSQL database dump complete' trailer "
            "is missing (the stream ended early); take the dump again"
        )
    after = tail[tail.rindex(TRAILER) + len(TRAILER) :]
    opened = _RESTRICT.search(head)
    if not opened:
        if any(line.strip() and not line.startswith(b"--") for line in after.splitlines()):
            raise errors.DumpFailed("the dump has data after pg_dump's trailer: take it again")
        return False
    closed = _UNRESTRICT.search(after)
    if not closed or closed[1] != opened[1]:
        raise errors.DumpFailed(
            "the dump is incomplete: its \\restrict line has no matching \\unrestrict line "
            "after the trailer; take the dump again"
        )
    if after[closed.end() :].strip():
        raise errors.DumpFailed("the dump has data after its \\unrestrict line: take it again")
    return True


class EdgeKeeper:
    """Keeps the first and last EDGE bytes of a stream, in constant memory."""

    def __init__(self) -> None:
        self.head = b""
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < EDGE:
            self.head += chunk[: EDGE - len(self.head)]
        self.tail = (self.tail + chunk)[-EDGE:]


def inflate(raw: BinaryIO, on_chunk: Callable[[bytes], object]) -> Iterator[bytes]:
    """The script inside a gzip file, in pieces; `on_chunk` sees every compressed chunk read.

    A gzip file may hold several members (pigz, `cat a.gz b.gz`); a file that ends inside a
    member raises DumpFailed, trailing garbage raises zlib.error.
    """
    inflater = zlib.decompressobj(wbits=31)
    while chunk := raw.read(CHUNK):
        on_chunk(chunk)
        pending = chunk
        while pending:
            if inflater.eof:
                inflater = zlib.decompressobj(wbits=31)
            yield inflater.decompress(pending)
            pending = inflater.unused_data if inflater.eof else b""
    if not inflater.eof:
        raise errors.DumpFailed("its gzip stream ends early (the file is truncated)")


def inspect(path: Path) -> DumpFile:
    """Read the whole file once: gzip must be intact and the script whole."""
    file_hash, sql_hash = hashlib.sha256(), hashlib.sha256()
    edges = EdgeKeeper()
    sizes = {"file": 0, "sql": 0}

    def on_chunk(chunk: bytes) -> None:
        sizes["file"] += len(chunk)
        file_hash.update(chunk)

    try:
        with path.open("rb") as raw:
            for data in inflate(raw, on_chunk):
                sql_hash.update(data)
                edges.feed(data)
                sizes["sql"] += len(data)
    except errors.DumpFailed as e:
        raise errors.DumpFailed(f"the dump {path} is truncated: {e}; take the dump again") from None
    except (OSError, zlib.error) as e:
        raise errors.DumpFailed(f"cannot read the dump {path}: {e}; take the dump again") from e
    restricted = check_script_edges(edges.head, edges.tail)
    return DumpFile(
        path, sizes["file"], file_hash.hexdigest(), sizes["sql"], sql_hash.hexdigest(), restricted
    )
