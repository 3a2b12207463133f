"""Kubernetes mode, --method stream: where the archive goes while the copy runs.

Sending the archive out through `kubectl exec` while pg_restore reads it ties the copy to the
exec stream's speed, which on the test cluster was most of the outage beyond the in-pod floor.
When the pod has room, its script instead tees the archive into a private directory in the pod
(with its SHA-256, computed as the bytes pass), and the runbook fetches it after verification,
off the outage, checking that the local copy's SHA-256 is the one the pod computed. When it has
no room, the archive streams out during the copy as before. Preflight decides, and says which.

The pod's copy lives in `${TMPDIR:-/tmp}/stackblitz-migrate-<run's UTC stamp>.dump` (mode
0700): it is removed once fetched, by the pod's script when the copy fails, by the runbook's
cleanup on any fault, and, should a killed run leave one, by the next run's preflight, which
recognises it by its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "stackblitz-migrate-"
SUFFIX = ".dump"
ARCHIVE = "archive"  # the file in the pod's directory
MARGIN = 1.1  # room beyond the archive's bound: the pod's own files keep growing meanwhile

# Run in the pod: the base directory, whether it is writable, its free kilobytes, and the
# leftovers of earlier runs removed (only names of our own pattern). No secret is involved.
ROOM_SCRIPT = f"""base=${{TMPDIR:-/tmp}}
printf 'sbm-base:%s\\n' "$base"
for d in "$base"/{PREFIX}*{SUFFIX}; do
  [ -d "$d" ] || continue
  rm -rf -- "$d" && printf 'sbm-removed:%s\\n' "$d"
done
if [ -w "$base" ]; then echo sbm-writable:yes; else echo sbm-writable:no; fi
df -Pk "$base" | {{ read -r _; read -r fs blocks used avail rest; echo "sbm-free-kb:$avail"; }}
"""

# $1: the directory. Only a name of our own pattern is removed; exit 3: it was not there.
ABSENT = 3
REMOVE_SCRIPT = f"""case "$1" in */{PREFIX}*{SUFFIX}) ;; *) exit 2;; esac
[ -e "$1" ] || exit {ABSENT}
rm -rf -- "$1" && [ ! -e "$1" ]
"""

# $1: the archive. The exec's stdout carries it out; the runbook hashes what arrives.
FETCH_SCRIPT = 'exec cat -- "$1"\n'

_LINE = re.compile(r"^sbm-([a-z-]+):(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Keeping:
    """Preflight's decision: keep the archive in the pod (`directory`), or stream it out."""

    in_pod: bool
    directory: str  # in the pod; where it would have been when not kept there
    free_bytes: int
    needed_bytes: int
    removed: tuple[str, ...] = ()  # leftovers of killed runs, removed
    ephemeral_storage_limit: int | None = None  # the container's: the room is no more than it

    @property
    def archive(self) -> str:
        return f"{self.directory}/{ARCHIVE}"

    def how(self) -> str:
        if self.in_pod:
            return "kept in the pod during the copy, fetched and checked after verification"
        return "streamed out to this host during the copy"

    def why(self) -> str:
        room = f"{_gb(self.free_bytes)} free in the pod's {self.base}"
        if self.ephemeral_storage_limit is not None:
            room += f" (its ephemeral-storage limit {_gb(self.ephemeral_storage_limit)} counted)"
        if self.in_pod:
            return f"{room}, the archive may need {_gb(self.needed_bytes)}"
        return (
            f"{room}, the archive may need {_gb(self.needed_bytes)}: not enough room to keep it "
            "there, so the copy waits for kubectl exec to carry it out"
        )

    @property
    def base(self) -> str:
        return self.directory.rsplit("/", 1)[0] or "/"

    def evidence(self) -> dict[str, object]:
        return {
            "artifact": self.how(),
            "why": self.why(),
            "pod_directory": self.directory,
            "free_bytes": self.free_bytes,
            "needed_bytes": self.needed_bytes,
            "ephemeral_storage_limit": self.ephemeral_storage_limit,
            "leftovers_removed": list(self.removed) or "none",
        }


def decide(
    probe_output: str, *, stamp: str, archive_bound: int, ephemeral_storage_limit: int | None = None
) -> Keeping:
    """From ROOM_SCRIPT's output: keep in the pod when its base directory is writable and has
    room for the archive's bound with a margin; a container's ephemeral-storage limit caps the
    room (files written past it get the pod evicted, the database with it)."""
    lines: dict[str, list[str]] = {}
    for key, value in _LINE.findall(probe_output):
        lines.setdefault(key, []).append(value.strip())
    base = (lines.get("base") or ["/tmp"])[0].rstrip("/") or ""
    try:
        free = int((lines.get("free-kb") or ["0"])[0]) * 1024
    except ValueError:
        free = 0
    writable = (lines.get("writable") or ["no"])[0] == "yes"
    if ephemeral_storage_limit is not None:
        free = min(free, ephemeral_storage_limit)
    needed = int(archive_bound * MARGIN)
    return Keeping(
        in_pod=writable and free >= needed,
        directory=f"{base}/{PREFIX}{stamp}{SUFFIX}",
        free_bytes=free if writable else 0,
        needed_bytes=needed,
        removed=tuple(lines.get("removed", [])),
        ephemeral_storage_limit=ephemeral_storage_limit,
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:,.2f} GB"
