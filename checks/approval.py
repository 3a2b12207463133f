"""Runs that belong together: the migration compares the facts it finds with those of the
preflight-only run the change was approved on (--preflight-evidence), and refuses when the facts
the approval rested on changed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from checks import errors, manifest

GROWTH = 0.10  # the database may grow by this fraction between approval and migration


@dataclass(frozen=True)
class Facts:
    """What an approval rests on."""

    database: str
    source_server: str
    target_server: str
    source_major: int
    target_major: int
    size_bytes: int
    extensions: frozenset[str]


def server_key(side: dict[str, object]) -> str:
    """Which server: its system identifier when readable (it survives restarts and address
    changes), else where it is (a Kubernetes source's port-forward port changes every run)."""
    identity = str(side.get("identity") or "")
    if identity.startswith("system "):
        return identity
    if side.get("kind") == "kubernetes":
        return f"pod {side.get('namespace')}/{side.get('pod')}"
    return f"{side.get('host')}:{side.get('port')}"


def _major(version: object) -> int:
    return int(str(version).split(".")[0])


def load(directory: Path) -> tuple[Facts, dict[str, object]]:
    """The approved preflight's facts and how the evidence names it; Refused (one line) when it is
    not a passed, intact preflight-only run."""
    doc_path = directory / "evidence.json"
    try:
        raw = doc_path.read_bytes()
        sums = (directory / manifest.NAME).read_text()
    except OSError as e:
        raise errors.Refused(
            f"--preflight-evidence {directory}: {e.strerror} ({e.filename}): point it at the "
            "reports directory of the approved --preflight-only run"
        ) from e
    for line in sums.splitlines():
        digest, name = line.split(maxsplit=1)
        if hashlib.sha256((directory / name).read_bytes()).hexdigest() != digest:
            raise errors.Refused(
                f"--preflight-evidence {directory}: {name} is not the file that run wrote "
                f"(its SHA-256 differs from {manifest.NAME}): use the evidence as approved"
            )
    doc = json.loads(raw)
    outcome = doc.get("outcome") or {}
    if doc.get("mode") != "preflight-only" or outcome.get("status") != "passed":
        raise errors.Refused(
            f"--preflight-evidence {directory} is a {doc.get('mode')} run that "
            f"{outcome.get('status', 'has no outcome')}: the approval needs a passed "
            "--preflight-only run"
        )
    preflight = doc.get("preflight") or {}
    facts = Facts(
        database=doc["database"],
        source_server=server_key(doc["source"]),
        target_server=server_key(doc["target"]),
        source_major=_major(doc["source"]["version"]),
        target_major=_major(doc["target"]["version"]),
        size_bytes=int(preflight["source_database"]["size_bytes"]),
        extensions=frozenset(preflight.get("source_extensions") or {}),
    )
    summary = {
        "path": str(directory.resolve()),
        "change_id": (doc.get("identity") or {}).get("change_id"),
        "started_at": doc.get("started_at"),
        "evidence_sha256": hashlib.sha256(raw).hexdigest(),
        "report": str((directory / "report.html").resolve()),
    }
    return facts, summary


def differences(approved: Facts, now: Facts) -> list[str]:
    """Each fact that changed since the approval, in words."""
    found = []
    for label, before, after in (
        ("database", approved.database, now.database),
        ("source server", approved.source_server, now.source_server),
        ("target server", approved.target_server, now.target_server),
        ("source major version", approved.source_major, now.source_major),
        ("target major version", approved.target_major, now.target_major),
    ):
        if before != after:
            found.append(f"{label} was {before}, is {after}")
    limit = approved.size_bytes * (1 + GROWTH)
    if now.size_bytes > limit:
        grown = now.size_bytes / approved.size_bytes - 1 if approved.size_bytes else float("inf")
        found.append(
            f"the database grew {grown:.0%} ({approved.size_bytes:,} to {now.size_bytes:,} "
            f"bytes; at most {GROWTH:.0%} is allowed)"
        )
    new = sorted(now.extensions - approved.extensions)
    if new:
        found.append(f"new extension(s) on the source: {', '.join(new)}")
    return found


def check(approved: Facts, now: Facts, directory: Path) -> None:
    changed = differences(approved, now)
    if changed:
        raise errors.Refused(
            f"the facts the approved preflight ({directory}) rested on changed: "
            f"{'; '.join(changed)}: run --preflight-only again and have it approved"
        )
