"""Turns SIGINT, SIGTERM and SIGHUP into one exception that unwinds through the run's cleanup.

A Ctrl-C, a cancelled CI job (SIGTERM) and a dropped SSH session (SIGHUP) all end the same way:
the handler only records the signal and raises `Interrupted` in the main thread, once; the code
it lands in unwinds through the same `except`/`finally` blocks as any error (children stopped,
the partial target database dropped, evidence written). Later signals are recorded and do not
raise again, so that the cleanup they would cut short finishes (it is bounded); a third one
escalates: the children are stopped and the process exits at once, without cleanup.

`Interrupted` derives from KeyboardInterrupt, not Exception: no `except Exception` on the way
may swallow it. A cleanup runs inside `deferred()`: a first signal that arrives during it is
raised once the cleanup is done, not in its middle.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType

from checks import children

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ESCALATE_AT = 3  # signals received: stop now, without cleanup


# Cleanups running now; signal handlers are process-wide, and so is this.
_deferring = 0
_pending: list[Interrupted] = []


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run a cleanup to its end; a signal's exception that came meanwhile is raised after it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        raise _pending.pop()


class Interrupted(KeyboardInterrupt):
    """The run received a stop signal."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame


class Stopper:
    """The process's one handler of stop signals, and what it received."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self._raising = False
        self._previous: dict[signal.Signals, object] = {}

    def install(self) -> None:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._raising = True

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def quiet(self) -> None:
        """From now on only record: the evidence is being written and must not be cut short."""
        self._raising = False

    @property
    def first(self) -> signal.Signals | None:
        return self.received[0] if self.received else None

    @property
    def exit_status(self) -> int | None:
        """128 + the first signal's number, as a shell reports a process that a signal ended."""
        return 128 + int(self.first) if self.first else None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        self.received.append(sig)
        if len(self.received) >= ESCALATE_AT:
            children.stop_all(grace_s=1.0)
            os._exit(128 + int(self.received[0]))
        if len(self.received) == 1 and self._raising:
            self._raising = False
            if _deferring:
                _pending.append(Interrupted(sig.name))
                return
            raise Interrupted(sig.name)
