"""A dump is accepted only when whole: gzip intact, trailer present, \\restrict pair matched."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from checks import dump, dumpfile, errors

BODY = b"CREATE TABLE t (id int);\nCOPY t (id) FROM stdin;\n1\n2\n\\.\n" * 2000
PLAIN = dumpfile.HEADER + BODY + b"--\n-- PostgreSQL database dump complete\n--\n\n"
RESTRICTED = (
    b"\\restrict abc123XYZ\n"
    + dumpfile.HEADER
    + BODY
    + b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123XYZ\n\n"
)


def _gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


@pytest.mark.parametrize("script", [PLAIN, RESTRICTED], ids=["plain", "restricted"])
def test_whole_dump_is_accepted(tmp_path: Path, script: bytes) -> None:
    info = dumpfile.inspect(_gz(tmp_path / "d.sql.gz", script))
    assert info.sql_bytes == len(script)
    assert info.restricted == script.startswith(b"\\restrict")


def test_gzip_cut_short_is_refused(tmp_path: Path) -> None:
    path = _gz(tmp_path / "d.sql.gz", PLAIN)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.DumpFailed, match="truncated"):
        dumpfile.inspect(path)


def test_script_cut_before_trailer_is_refused(tmp_path: Path) -> None:
    """A stream that ends early, then gzip-closed cleanly: the gzip is valid, the SQL is not."""
    path = _gz(tmp_path / "d.sql.gz", PLAIN[: len(PLAIN) - 100])
    with pytest.raises(errors.DumpFailed, match="trailer is missing"):
        dumpfile.inspect(path)


def test_restricted_dump_without_unrestrict_is_refused(tmp_path: Path) -> None:
    cut = RESTRICTED[: RESTRICTED.index(b"\\unrestrict")]
    with pytest.raises(errors.DumpFailed, match="unrestrict"):
        dumpfile.inspect(_gz(tmp_path / "d.sql.gz", cut))


def test_mismatched_unrestrict_key_is_refused(tmp_path: Path) -> None:
    wrong = RESTRICTED.replace(b"\\unrestrict abc123XYZ", b"\\unrestrict other")
    with pytest.raises(errors.DumpFailed, match="unrestrict"):
        dumpfile.inspect(_gz(tmp_path / "d.sql.gz", wrong))


def test_multi_member_gzip_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "d.sql.gz"
    half = len(PLAIN) // 2
    path.write_bytes(gzip.compress(PLAIN[:half]) + gzip.compress(PLAIN[half:]))
    assert dumpfile.inspect(path).sql_bytes == len(PLAIN)


def test_write_dump_records_what_inspect_finds(tmp_path: Path) -> None:
    dest = tmp_path / "d.sql.gz"
    written = dump.write_dump(io.BytesIO(RESTRICTED), dest)
    assert dumpfile.inspect(dest) == written
    assert gzip.decompress(dest.read_bytes()) == RESTRICTED
    assert dest.stat().st_mode & 0o777 == 0o600


def test_write_dump_of_a_cut_stream_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "d.sql.gz"
    with pytest.raises(errors.DumpFailed, match="incomplete"):
        dump.write_dump(io.BytesIO(RESTRICTED[:-40]), dest)
    assert list(tmp_path.iterdir()) == []


def test_write_dump_never_overwrites(tmp_path: Path) -> None:
    dest = tmp_path / "d.sql.gz"
    (tmp_path / "d.sql.gz.partial").write_bytes(b"earlier")
    with pytest.raises(errors.DumpFailed, match="exists"):
        dump.write_dump(io.BytesIO(PLAIN), dest)
    assert (tmp_path / "d.sql.gz.partial").read_bytes() == b"earlier"
