"""Who ran the runbook, from where, with which copy of it: the run's identity in the evidence."""

from __future__ import annotations

import getpass
import platform
import socket
import subprocess
import sys
from pathlib import Path

from checks import release

try:
    import tomllib
except ImportError:  # Python 3.9 and 3.10: tomllib's origin, a dependency there
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent


def operator() -> dict[str, str]:
    """The user and host that ran the runbook."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (some containers)
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


def tool(repo: Path = REPO) -> dict[str, str]:
    """This checkout's version and git commit ("+local changes" when it differs from it)."""
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    built = release.info()  # the release file has no git checkout: its build recorded the commit
    found = {
        "version": version,
        "commit": built["commit"] if built else _commit(repo),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    release_file = release.file_digest()
    if release_file:
        found["release_file"] = release_file
    return found


def _commit(repo: Path) -> str:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )

    try:
        head = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" +local changes" if changes.stdout.strip() else "")
