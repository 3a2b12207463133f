"""The Kubernetes stream's pod script, run here with this host's sh (dash, as in the pod image),
for what the cluster tests cannot time closely: the archive's end reaches this side as soon as
pg_dump's output ends (not once the restore has finished), and a local side that goes away
stops every program the script started and leaves no temporary directory.

pg_dump and pg_restore are stand-ins here (shell scripts that write and read bytes slowly): the
pod's real ones need the pod's server; tests/test_faults_kubernetes.py runs the real ones.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from checks import kubernetes, podcopy

PG_DUMP = "#!/bin/sh\nprintf PGDMP; head -c 3000000 /dev/zero; sleep ${DUMP_S:-0}\n"
PG_RESTORE = "#!/bin/sh\ncat > /dev/null; sleep ${RESTORE_S:-0}\n"


def _start(
    tmp: Path, keep: str = "", restore: str = PG_RESTORE, **env: str
) -> subprocess.Popen[bytes]:
    """The stream script; `keep`: the directory that keeps the archive (checks.podcopy)."""
    bindir, podtmp = tmp / "bin", tmp / "podtmp"
    bindir.mkdir()
    podtmp.mkdir()
    for name, text in (("pg_dump", PG_DUMP), ("pg_restore", restore)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    proc = subprocess.Popen(
        ["sh", "-c", kubernetes.STREAM_SCRIPT, "sh", "host=target", "db", "u", keep],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "POSTGRES_USER": "u",
            "TMPDIR": str(podtmp),
            **env,
        },
    )
    assert proc.stdin
    proc.stdin.write(b"password\n\n")  # the login lines; no CA bundle
    proc.stdin.flush()
    return proc


def _ours_running(tmp: Path) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in argv and "pytest" not in argv:
            found.append(argv.replace("\0", " ")[:120])
    return found


def test_the_archive_ends_here_before_the_restore_has_finished(tmp_path: Path) -> None:
    """And stdin then ending, as the container runtime ends it once stdout has, lets the
    restore finish: the archive is out."""
    proc = _start(tmp_path, RESTORE_S="3")
    started = time.monotonic()
    assert proc.stdout and proc.stdin
    size = len(proc.stdout.read())
    ended = time.monotonic() - started
    proc.stdin.close()  # what containerd does when the exec's stdout ends
    assert proc.wait(timeout=30) == 0
    finished = time.monotonic() - started
    print(f"archive ended after {ended:.1f} s, script after {finished:.1f} s")
    assert size == 3_000_005 and ended < 2 < finished
    err = proc.stderr.read().decode() if proc.stderr else ""
    for line in ("sbm-pg-dump-exit:0", "sbm-pg-restore-exit:0", "sbm-bytes:3000005"):
        assert line in err, err
    assert not list((tmp_path / "podtmp").iterdir())


def test_a_vanished_local_side_stops_everything_the_script_started(tmp_path: Path) -> None:
    proc = _start(tmp_path, DUMP_S="60")  # pg_dump still writing
    time.sleep(1)
    assert proc.stdin and proc.stderr
    proc.stdin.close()  # kubectl gone: stdin ends without "end", the archive not yet out
    proc.wait(timeout=15)
    deadline = time.monotonic() + 5
    while _ours_running(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    # the stand-ins' own `sleep` children are not the pod's programs; real ones have none
    assert [p for p in _ours_running(tmp_path) if "sleep" not in p] == []
    assert not list((tmp_path / "podtmp").iterdir())
    assert "sbm-pg-restore-exit:0" not in proc.stderr.read().decode()


ARCHIVE = b"PGDMP" + bytes(3_000_000)


def test_a_kept_archive_stays_in_the_pod_with_its_sha256(tmp_path: Path) -> None:
    """Only sizes come out (the progress); the archive stays, private, hashed as it passed;
    stdout ends when pg_dump's output does, before the restore has finished."""
    keep = tmp_path / "keep" / "stackblitz-migrate-20261130T000000Z.dump"
    keep.parent.mkdir()
    proc = _start(tmp_path, str(keep), DUMP_S="2", RESTORE_S="3")
    started = time.monotonic()
    assert proc.stdout and proc.stdin and proc.stderr
    out = proc.stdout.read()
    ended = time.monotonic() - started
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    finished = time.monotonic() - started
    assert b"PGDMP" not in out and out.startswith(b"sbm-progress:"), out[:200]
    assert out.splitlines()[-1] == b"sbm-progress:3000005"  # the whole archive, before its end
    assert 2 < ended < finished and finished > 5, (ended, finished)
    err = proc.stderr.read().decode()
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    for line in ("sbm-pg-dump-exit:0", "sbm-pg-restore-exit:0", "sbm-bytes:3000005"):
        assert line in err, err
    assert f"sbm-sha256:{sha}" in err, err
    assert (keep / "archive").read_bytes() == ARCHIVE
    assert stat.S_IMODE(keep.stat().st_mode) == 0o700
    assert stat.S_IMODE((keep / "archive").stat().st_mode) == 0o600
    assert not list((tmp_path / "podtmp").iterdir())


def test_a_failed_restore_leaves_no_kept_archive(tmp_path: Path) -> None:
    keep = tmp_path / "stackblitz-migrate-x.dump"
    proc = _start(tmp_path, str(keep), "#!/bin/sh\nhead -c 100 > /dev/null; exit 1\n")
    assert proc.stdout and proc.stdin and proc.stderr
    proc.stdout.read()
    proc.stdin.close()
    proc.wait(timeout=30)
    assert "sbm-pg-restore-exit:1" in proc.stderr.read().decode()
    assert not keep.exists()
    assert not list((tmp_path / "podtmp").iterdir())


def test_a_vanished_local_side_leaves_no_kept_archive(tmp_path: Path) -> None:
    keep = tmp_path / "stackblitz-migrate-x.dump"
    proc = _start(tmp_path, str(keep), DUMP_S="60")
    time.sleep(1.5)
    assert keep.is_dir()  # the copy under way
    assert proc.stdin
    proc.stdin.close()  # kubectl gone: stdin ends without "end"
    proc.wait(timeout=15)
    assert not keep.exists()
    assert not list((tmp_path / "podtmp").iterdir())


def test_room_and_leftovers_in_the_pod(tmp_path: Path) -> None:
    """ROOM_SCRIPT, run by this host's sh: a killed run's directory is removed, the base's free
    space read; decide() keeps the archive in the pod only with room for its bound."""
    (tmp_path / "stackblitz-migrate-20260101T000000Z.dump").mkdir()
    (tmp_path / "unrelated.dump").mkdir()
    done = subprocess.run(
        ["sh", "-c", podcopy.ROOM_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    free = shutil.disk_usage(tmp_path).free
    roomy = podcopy.decide(done.stdout, stamp="S", archive_bound=free // 4)
    assert roomy.in_pod and roomy.directory == f"{tmp_path}/stackblitz-migrate-S.dump"
    assert roomy.removed == (f"{tmp_path}/stackblitz-migrate-20260101T000000Z.dump",)
    assert abs(roomy.free_bytes - free) < free * 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.dump"]
    cramped = podcopy.decide(done.stdout, stamp="S", archive_bound=free)
    assert not cramped.in_pod and "not enough room" in cramped.why()
    # a container limited to 1 MB of ephemeral storage would be evicted: streamed out
    limited = podcopy.decide(
        done.stdout, stamp="S", archive_bound=1_000_000, ephemeral_storage_limit=1_000_000
    )
    assert not limited.in_pod and limited.free_bytes == 1_000_000
    assert "ephemeral-storage limit" in limited.why()
