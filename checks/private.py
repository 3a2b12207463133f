"""Files that may hold data or secrets: created readable by their owner only, from the start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def open_private(path: Path, mode: str = "wb", *, exclusive: bool = False) -> IO:  # type: ignore[type-arg]
    """Open `path` for writing with mode 0600 (never a moment of wider permissions).

    `exclusive` refuses an existing file (FileExistsError), so nothing earlier is overwritten.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)
