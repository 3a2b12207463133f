"""Debian 11 as the operators' hosts have it: scripts/debian11-rootfs's root filesystem (Debian's
own Python 3.9, no venv, no pip, no PostgreSQL), and commands run there under chroot.

Each Chroot is an overlay of the shared root filesystem: what a test puts in or its commands
write lands in the test's own upper directory, so every test starts from Debian 11 as built.
The overlay is mounted in a private mount namespace for one command at a time (unshare), so no
mount outlives the command, whatever happens to the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "scripts" / "debian11-rootfs"
ROOTFS_ENV = "STACKBLITZ_MIGRATE_DEBIAN11_ROOTFS"  # a root filesystem built elsewhere
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# $1 lower, $2 upper, $3 work, $4 the merged root, $5 a directory to mount a noexec tmpfs on
# (or ""); then the command to run in the chroot.
_ENTER = (
    "set -e; root=$4; "
    'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$root"; '
    'mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; '
    'if [ -n "$5" ]; then mkdir -p "$root$5"; mount -t tmpfs -o noexec tmpfs "$root$5"; fi; '
    'shift 5; exec chroot "$root" "$@"'
)


def rootfs() -> Path:
    """The Debian 11 root filesystem's directory: STACKBLITZ_MIGRATE_DEBIAN11_ROOTFS, else
    scripts/debian11-rootfs's (built on first use, about 80 s; then cached under
    /var/cache/stackblitz-migrate). Treat it as read-only: chroot into overlay(...)."""
    given = os.environ.get(ROOTFS_ENV)
    if given:
        return Path(given)
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/debian11-rootfs failed: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Chroot:
    lower: Path  # the shared root filesystem, never written
    upper: Path  # this chroot's files: what was put in, what its commands wrote
    work: Path
    merged: Path

    def path(self, inside: str) -> Path:
        """Where a file the chroot's commands wrote (or that was put in) is, seen from here."""
        return self.upper / inside.lstrip("/")

    def put(self, source: Path, inside: str, mode: int = 0o644) -> None:
        dest = self.path(inside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        dest.chmod(mode)

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        dest = self.path(inside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(mode)

    def run(
        self,
        *argv: str,
        cwd: str = "/root",
        network: bool = True,
        env: dict[str, str] | None = None,
        noexec: str = "",
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the chroot as root, in `cwd` (created), with a clean environment (HOME,
        PATH, LANG and `env`); `network=False`: in a network namespace of its own, with nothing
        but a loopback that is down; `noexec`: a directory that is an empty noexec tmpfs, as
        some hosts mount their home or /tmp."""
        self.path(cwd).mkdir(parents=True, exist_ok=True)
        variables = {"HOME": "/root", "PATH": PATH, "LANG": "C.UTF-8", **(env or {})}
        inside = [
            "/usr/bin/env",
            "-i",
            *(f"{k}={v}" for k, v in variables.items()),
            "/bin/sh",
            "-c",
            'cd "$1" && shift && exec "$@"',
            "sh",
            cwd,
            *argv,
        ]
        layers = [str(p) for p in (self.lower, self.upper, self.work, self.merged)]
        return subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                *([] if network else ["--net"]),
                "--",
                "/bin/sh",
                "-c",
                _ENTER,
                "sh",
                *layers,
                noexec,
                *inside,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def overlay(directory: Path) -> Chroot:
    """A fresh Debian 11 chroot whose changes go under `directory`."""
    layers = [directory / name for name in ("upper", "work", "merged")]
    for layer in layers:
        layer.mkdir(parents=True)
    return Chroot(rootfs(), *layers)
