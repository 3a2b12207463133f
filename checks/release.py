"""Whether the runbook runs from the one-file release (scripts/build-release), and what the
build recorded: the release has no git checkout to ask."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_INFO = REPO / "release.json"  # written into the release by scripts/build-release


def info(path: Path = BUILD_INFO) -> dict[str, str] | None:
    """The release's version and commit, or None when running from a checkout."""
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return {str(k): str(v) for k, v in found.items()}


def file_digest() -> str | None:
    """`<release file> sha256:<hex>` for the release file this run was started from (the pex's
    boot names it in PEX), to compare with the published checksum; None from a checkout."""
    path = os.environ.get("PEX") if info() is not None else None
    if not path:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        return f"{path} (unreadable: {e.strerror})"
    return f"{path} sha256:{digest.hexdigest()}"
