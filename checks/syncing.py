"""Makes a large file durable as it is written, so that its final fsync does not wait.

Written at hundreds of MB/s, a dump leaves gigabytes of dirty pages, and one fsync at the end
then stalls for seconds inside the outage. A thread that syncs every second while the writer
goes on keeps that last fsync down to the last second's data (fsync releases the GIL).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import IO

EVERY_S = 1.0


@contextlib.contextmanager
def syncing(out: IO[bytes]) -> Iterator[None]:
    """While the block writes to `out`, sync it every second; at a normal exit, flush and fsync."""
    done = threading.Event()
    fd = out.fileno()

    def loop() -> None:
        while not done.wait(EVERY_S):
            with contextlib.suppress(OSError):  # the final fsync reports any real error
                os.fdatasync(fd)

    thread = threading.Thread(target=loop, name="sbm-sync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    out.flush()
    os.fsync(fd)
