"""The programs a run starts (pg_dump, pg_restore, psql, kubectl): started so that they can be
stopped together, whatever stops the run.

Each child gets its own process group (in a session of its own, so without the terminal: a
program that would prompt on it fails instead of waiting): a Ctrl-C on the terminal then reaches
only the runbook, which decides the order of the stop (the copy first, so that nothing more is
created on the target), instead of every program dying at once in its own way. `stop_all` ends
every group still running (SIGTERM, then SIGKILL after a grace period); it may run from any
thread, any number of times.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

GRACE_S = 5.0  # for a child to end after SIGTERM (kubectl closes its stream) before SIGKILL

_lock = threading.Lock()
_running: set[subprocess.Popen[bytes]] = set()


def popen(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """subprocess.Popen in a process group of its own, remembered until it has ended."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    with _lock:
        for done in [p for p in _running if p.poll() is not None]:
            _running.discard(done)
        _running.add(proc)
    return proc


def stop_all(grace_s: float = GRACE_S) -> int:
    """End every child still running, with its group; how many were running."""
    with _lock:
        live = [p for p in _running if p.poll() is None]
    for proc in live:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in live:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    with _lock:
        for proc in live:
            _running.discard(proc)
    return len(live)


def running() -> int:
    with _lock:
        return sum(1 for p in _running if p.poll() is None)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone, group and all
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def stopped_on_error() -> Iterator[None]:
    """Stop every child if the block raises anything (a signal's exception too)."""
    try:
        yield
    except BaseException:
        stop_all()
        raise
