"""The Kubernetes stream's pod scripts, run here with this host's sh (dash, as in the pod image),
for what the cluster tests cannot time closely: the copy's end reaches this side as soon as
pg_dump has ended (not once the restore has finished), only progress lines come out during the
copy, a local side that goes away stops every program the script started and leaves no
temporary directory, and the artifact's script sends the archive with its count.

pg_dump and pg_restore are stand-ins here (scripts that write and read bytes slowly): the pod's
real ones need the pod's server; tests/test_faults_kubernetes.py runs the real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from checks import kubernetes
from checks.progress import Progress

# A stopped stand-in stops its sleep too, as a real pg_dump leaves no child to hold the fifo.
PG_DUMP = (
    "#!/bin/sh\ntrap 'kill $s; exit 143' TERM\n"
    "printf PGDMP; head -c 3000000 /dev/zero; sleep ${DUMP_S:-0} & s=$!; wait $s\n"
)
PG_RESTORE = "#!/bin/sh\ncat > /dev/null; sleep ${RESTORE_S:-0}\n"
ARCHIVE = b"PGDMP" + bytes(3_000_000)


def _bindir(tmp: Path, pg_dump: str = PG_DUMP, pg_restore: str = PG_RESTORE) -> Path:
    bindir = tmp / "bin"
    bindir.mkdir()
    for name, text in (("pg_dump", pg_dump), ("pg_restore", pg_restore)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    return bindir


def _start(
    tmp: Path,
    pg_dump: str = PG_DUMP,
    restore: str = PG_RESTORE,
    *,
    user: str | None = None,
    **env: str,
) -> subprocess.Popen[bytes]:
    """The stream script, logged in (password line, no CA bundle), reading snapshot S."""
    bindir, podtmp = _bindir(tmp, pg_dump, restore), tmp / "podtmp"
    podtmp.mkdir()
    if user:
        shutil.chown(podtmp, user)
    as_user = ["runuser", "-u", user, "--"] if user else []
    proc = subprocess.Popen(
        [*as_user, "sh", "-c", kubernetes.STREAM_SCRIPT, "sh", "host=target", "db", "u", "S"],
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
    """Stdout (the progress lines) ends within the reporter's second of pg_dump's end; stdin
    then ending, as the container runtime ends it once stdout has, lets the restore finish."""
    proc = _start(tmp_path, RESTORE_S="4")
    started = time.monotonic()
    assert proc.stdout and proc.stdin
    proc.stdout.read()
    ended = time.monotonic() - started
    proc.stdin.close()  # what containerd does when the exec's stdout ends
    assert proc.wait(timeout=30) == 0
    finished = time.monotonic() - started
    print(f"copy's output ended after {ended:.1f} s, script after {finished:.1f} s")
    assert ended < 2.5 < 4 < finished
    err = proc.stderr.read().decode() if proc.stderr else ""
    for line in ("sbm-pg-dump-exit:0", "sbm-pg-restore-exit:0"):
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


# pg_dump where /proc/<pid>/io cannot be read: a process that made itself non-dumpable, as
# one started from a file its user may not read is (only root may then read its io).
UNDUMPABLE_PG_DUMP = """#!/usr/bin/python3
import ctypes, sys, time
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
sys.stdout.buffer.write(b"PGDMP")
for _ in range(30):
    sys.stdout.buffer.write(bytes(100_000)); sys.stdout.flush(); time.sleep(0.1)
"""


def test_progress_lines_count_what_pg_dump_wrote(tmp_path: Path) -> None:
    """Only the reporter's lines come out during the copy; the last, once pg_dump has written
    everything, is the whole archive's size."""
    proc = _start(tmp_path, DUMP_S="2", RESTORE_S="1")
    assert proc.stdout and proc.stdin and proc.stderr
    out = proc.stdout.read()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    lines = out.splitlines()
    assert lines and all(line.startswith(b"sbm-progress:") for line in lines), out[:300]
    assert lines[-1] == b"sbm-progress:3000005"
    err = proc.stderr.read().decode()
    assert "sbm-pg-dump-exit:0" in err and "sbm-pg-restore-exit:0" in err, err
    assert "cannot be read" not in err


def test_progress_without_proc_io_is_pg_dumps_cpu_time(tmp_path: Path) -> None:
    """Where /proc/<pid>/io is unreadable (here: pg_dump non-dumpable, the script run by an
    unprivileged user), the script says so on stderr and reports CPU time, which the runbook
    takes as movement for the stall watch, never as bytes (kubernetes._Reported)."""
    if os.geteuid() != 0:
        pytest.skip("runs the script as another user: needs root")
    # A directory that user may enter (pytest's tmp_path is root's alone).
    tmp = Path(tempfile.mkdtemp(prefix="sbm-pod-"))
    tmp.chmod(0o755)
    try:
        proc = _start(tmp, UNDUMPABLE_PG_DUMP, user="stackblitz-migrate")
        assert proc.stdout and proc.stdin and proc.stderr
        out = proc.stdout.read()
        proc.stdin.close()
        proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
    assert "sbm-pg-dump-exit:0" in err and "sbm-pg-restore-exit:0" in err, err
    assert err.count("cannot be read in the pod: progress is pg_dump's CPU time") == 1, err
    # the first line can come before pg_dump runs (the shell that starts it is readable)
    lines = [line for line in out.splitlines() if line != b"sbm-progress:0"]
    assert lines and all(line.startswith(b"sbm-cpu:") for line in lines), out[:300]
    reported = kubernetes._Reported(progress := _progress())
    for line in out.splitlines():
        reported.read(line)
    assert reported.bytes == 0 and progress.bytes == 0
    assert progress.beats == len(set(lines)) > 0


def _progress() -> Progress:
    return Progress("copy", None)


def _artifact(tmp: Path, pg_dump: str = PG_DUMP) -> subprocess.CompletedProcess[bytes]:
    """The artifact's script, its stdin closed with "end" as the runbook does."""
    bindir = _bindir(tmp, pg_dump)
    return subprocess.run(
        ["sh", "-c", kubernetes.ARTIFACT_SCRIPT, "sh", "db", "u", "S"],
        input=kubernetes.END,
        capture_output=True,
        env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"},
        timeout=60,
        check=False,
    )


def test_the_artifact_comes_out_whole_with_its_count(tmp_path: Path) -> None:
    seen = tmp_path / "argv"
    done = _artifact(tmp_path, PG_DUMP.replace("printf", f'echo "$*" > {seen}; printf', 1))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ARCHIVE
    assert b"sbm-bytes:3000005" in done.stderr and b"sbm-pg-dump-exit:0" in done.stderr
    assert seen.read_text().split() == ["-Fc", "-Z0", "-x", "--snapshot=S", "-U", "u", "-d", "db"]


def test_a_failed_artifact_dump_is_marked(tmp_path: Path) -> None:
    done = _artifact(tmp_path, "#!/bin/sh\nprintf PGDMP; exit 1\n")
    assert b"sbm-pg-dump-exit:1" in done.stderr and b"sbm-bytes:5" in done.stderr
