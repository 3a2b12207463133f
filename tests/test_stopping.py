"""The stop machinery on its own, with real signals and real processes: one exception per run,
later signals only counted, a cleanup finished before the exception, children stopped as
groups."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks import children, interrupt


@pytest.fixture
def stopper() -> Iterator[interrupt.Stopper]:
    s = interrupt.Stopper()
    s.install()
    try:
        yield s
    finally:
        s.uninstall()


def _signal(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.2)  # the handler runs between bytecodes of this thread


def test_the_first_signal_raises_later_ones_are_counted(stopper: interrupt.Stopper) -> None:
    with pytest.raises(interrupt.Interrupted, match="interrupted by SIGTERM"):
        _signal(signal.SIGTERM)
    _signal(signal.SIGHUP)  # a cleanup under way is not cut short by a second signal
    assert [s.name for s in stopper.received] == ["SIGTERM", "SIGHUP"]
    assert stopper.exit_status == 143


def test_a_signal_during_a_cleanup_is_raised_once_it_is_done(stopper: interrupt.Stopper) -> None:
    done = []
    with pytest.raises(interrupt.Interrupted, match="SIGINT"), interrupt.deferred():
        _signal(signal.SIGINT)
        done.append("cleanup finished")
    assert done == ["cleanup finished"] and stopper.exit_status == 130


def test_quiet_only_records(stopper: interrupt.Stopper) -> None:
    stopper.quiet()  # the evidence is being written
    _signal(signal.SIGHUP)
    assert stopper.exit_status == 129


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_children_are_stopped_with_their_own_children(tmp_path: Path) -> None:
    """A child's grandchild (a shell's pipeline) stops too: the whole process group goes, and
    a child that ignores SIGTERM is killed after the grace period."""
    pidfile, ready = tmp_path / "grandchild", tmp_path / "stubborn"
    shell = children.popen(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"])
    stubborn = children.popen(["sh", "-c", f"trap '' TERM; : > {ready}; sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while not ready.exists() or not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert os.getpgid(shell.pid) == shell.pid != os.getpgid(0)  # not in the runbook's group
    started = time.monotonic()
    assert children.stop_all(grace_s=1.0) == 2
    assert time.monotonic() - started < 5
    assert shell.poll() is not None and stubborn.poll() == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
    assert children.running() == 0
