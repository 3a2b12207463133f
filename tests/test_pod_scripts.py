"""The Kubernetes stream's pod script, run here with this host's sh (dash, as in the pod image),
for what the cluster tests cannot time closely: the archive's end reaches this side as soon as
pg_dump's output ends (not once the restore has finished), and a local side that goes away
stops every program the script started and leaves no temporary directory.

pg_dump and pg_restore are stand-ins here (shell scripts that write and read bytes slowly): the
pod's real ones need the pod's server; tests/test_faults_kubernetes.py runs the real ones.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from checks import kubernetes

PG_DUMP = "#!/bin/sh\nprintf PGDMP; head -c 3000000 /dev/zero; sleep ${DUMP_S:-0}\n"
PG_RESTORE = "#!/bin/sh\ncat > /dev/null; sleep ${RESTORE_S:-0}\n"


def _start(tmp: Path, **env: str) -> subprocess.Popen[bytes]:
    bindir, podtmp = tmp / "bin", tmp / "podtmp"
    bindir.mkdir()
    podtmp.mkdir()
    for name, text in (("pg_dump", PG_DUMP), ("pg_restore", PG_RESTORE)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    proc = subprocess.Popen(
        ["sh", "-c", kubernetes.STREAM_SCRIPT, "sh", "host=target", "db", "u"],
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
