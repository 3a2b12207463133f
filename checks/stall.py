"""A copy that stops moving is a fault: no bytes from pg_dump or into the restore for
--stall-timeout seconds ends it, as an error would.

A black-holed network (a managed server failing over, a dropped VPN) does not close a
connection: reads and writes just wait, and without this the outage would wait with them. The
watchdog looks only while a stream is inside its copy loop (checks.progress `streaming`), so a
restore that builds indexes after its last byte is not a stall; TCP keepalives (checks.endpoint)
notice a dead peer there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from checks import children
from checks.progress import Progress

DEFAULT_S = 300


class Watchdog:
    """While entered, stop every child (`on_stall`) when `progress` has not moved for
    `timeout_s` seconds during a copy loop; `fired` says it did."""

    def __init__(
        self,
        progress: Progress,
        timeout_s: float,
        on_stall: Callable[[], object] = children.stop_all,
    ) -> None:
        self.progress = progress
        self.timeout_s = timeout_s
        self.on_stall = on_stall
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sbm-stall", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        seen, since = self._moved(), time.monotonic()
        while not self._done.wait(min(1.0, self.timeout_s / 4)):
            now = time.monotonic()
            if self._moved() != seen or not self.progress.active:
                seen, since = self._moved(), now
            elif now - since >= self.timeout_s:
                self.fired = True
                self.on_stall()
                return

    def _moved(self) -> tuple[int, int]:
        return self.progress.bytes, self.progress.beats

    def message(self) -> str:
        return (
            f"no bytes moved for {self.timeout_s:g} s (--stall-timeout): a server or the network "
            "stopped answering; check both, then run the same command again"
        )
