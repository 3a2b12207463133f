"""Tamper evidence: SHA256SUMS over a run's evidence files, signed with the operator's SSH key
(`ssh-keygen -Y sign`), so that an approver proves with `sha256sum -c` and `ssh-keygen -Y verify`
that the files in front of them are the ones the run wrote. The key's content is never read here:
only ssh-keygen opens it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from checks import errors

NAME = "SHA256SUMS"
NAMESPACE = "stackblitz-migrate"  # ssh-keygen's signature namespace: a signature for nothing else
EVIDENCE = ("evidence.json", "junit.xml", "report.html")


def write(directory: Path, names: tuple[str, ...] = EVIDENCE) -> Path:
    """SHA256SUMS (sha256sum's format) over the named files that exist in `directory`."""
    lines = []
    for name in sorted(names):
        path = directory / name
        if path.is_file():
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
    manifest = directory / NAME
    manifest.write_text("".join(lines))
    return manifest


def key_fingerprint(key: Path) -> str:
    """The signing key's fingerprint (as `ssh-keygen -l` prints it); UsageError, one line, for a
    key ssh-keygen would refuse."""
    try:
        mode = key.stat().st_mode
    except OSError as e:
        raise errors.UsageError(f"--sign-key {key}: {e.strerror}") from e
    if mode & 0o077:
        raise errors.UsageError(f"--sign-key {key} is readable by others: run `chmod 600 {key}`")
    listed = _ssh_keygen("-l", "-f", str(key))
    if listed.returncode != 0:
        raise errors.UsageError(f"--sign-key {key} is not an SSH private key: {_first(listed)}")
    return listed.stdout.split()[1]


def sign(manifest: Path, key: Path) -> Path:
    """`ssh-keygen -Y sign` the manifest; returns the signature file (manifest + .sig)."""
    signature = manifest.with_name(manifest.name + ".sig")
    signature.unlink(missing_ok=True)  # ssh-keygen asks before overwriting
    done = _ssh_keygen("-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(manifest))
    if done.returncode != 0 or not signature.is_file():
        raise errors.MigrationError(f"ssh-keygen could not sign {manifest}: {_first(done)}")
    return signature


def _ssh_keygen(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args], capture_output=True, text=True, check=False, timeout=120
        )
    except FileNotFoundError as e:
        raise errors.ToolMissing(
            "ssh-keygen is not installed: apt-get install openssh-client"
        ) from e


def _first(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[0] if lines else f"exit status {done.returncode}"
