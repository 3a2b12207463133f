"""The evidence of one run: what was checked, what it found, written as JSON for the approver."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from checks.data import Comparison
from checks.dumpfile import DumpFile
from checks.outcome import Outcome
from checks.overlap import Early
from checks.rowdigest import Choice

UTC = timezone.utc  # datetime.UTC from Python 3.11
STAGES = ("preflight", "dump", "restore", "verify", "encryption key", "artifact")
# Stages listed only in the runs they belong to (--method stream: the archive written after
# verification); with --method seed the dump stage writes the file, and `not_applicable` still
# names the check and why.
LISTED_ONLY_WHEN_RUN = frozenset({"artifact"})
AFTER_VERIFY = frozenset(STAGES[STAGES.index("verify") + 1 :])


@dataclass
class CheckRecord:
    stage: str
    name: str
    outcome: str  # passed, failed, skipped
    seconds: float
    message: str = ""
    started: float | None = None  # the check's own start and end, seconds since the epoch
    stopped: float | None = None


@dataclass
class Run:
    mode: str
    database: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    rehearsal: str | None = None
    source: dict[str, object] = field(default_factory=dict)
    target: dict[str, object] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    preflight: dict[str, object] = field(default_factory=dict)
    dump: dict[str, object] | None = None
    restore: dict[str, object] | None = None  # --method seed: the restore's own timing
    comparison: Comparison | None = None
    schema_differences: list[str] | None = None
    schema_objects: int | None = None  # how many objects the schema comparison covered
    encryption_key: dict[str, object] | None = None
    no_key: bool = False  # --no-key: the key is not part of this run's "done"
    kots: dict[str, object] = field(default_factory=dict)  # where the KOTS config came from
    workloads: list[dict[str, object]] | None = None  # Kubernetes mode: the write freeze
    checks: list[CheckRecord] = field(default_factory=list)
    # Who ran it, from where, with what: change id, operator, tool, cluster (fixtures.identity).
    identity: dict[str, object] = field(default_factory=dict)
    # How the evidence is sealed: SHA256SUMS, and its signature with --sign-key.
    seal: dict[str, object] = field(default_factory=dict)
    approved_preflight: dict[str, object] | None = None  # --preflight-evidence: the run approved
    # Checks not collected, as they do not apply to this mode or method: stage, check, reason.
    not_applicable: list[dict[str, str]] = field(default_factory=list)
    outcome: Outcome | None = None  # decided at the end (checks.outcome), with the exit status
    # A stop signal: {"by": "SIGTERM", "stage": "dump", "check": ...}; the run is then unverified.
    interrupted: dict[str, object] | None = None
    cleanup: list[str] = field(default_factory=list)  # after a fault: what was undone, what stays
    # Values that must never appear in anything written: passwords, the key.
    secrets: set[str] = field(default_factory=set, repr=False)
    dump_file: DumpFile | None = field(default=None, repr=False)
    # --method stream: the digests taken while the copy ran (checks.overlap), for stage 4.
    early: Early | None = field(default=None, repr=False)
    verification: dict[str, object] | None = None  # what stage 4's data check did, overlap too
    row_digest: Choice | None = None  # the rows' hash on both servers, and why (preflight)

    def stages(self) -> list[dict[str, object]]:
        out = []
        for name in STAGES:
            checks = [c for c in self.checks if c.stage == name]
            if not checks:
                absent = [n for n in self.not_applicable if n["stage"] == name]
                if absent and name not in LISTED_ONLY_WHEN_RUN:
                    out.append(
                        {
                            "name": name,
                            "outcome": "not applicable",
                            "seconds": 0.0,
                            "detail": absent[0]["reason"],
                        }
                    )
                continue
            outcomes = {c.outcome for c in checks}
            outcome = (
                "failed"
                if "failed" in outcomes
                else "passed"
                if "passed" in outcomes
                else "skipped"
            )
            reason = next((c.message for c in checks if c.outcome == outcome and c.message), "")
            out.append(
                {
                    "name": name,
                    "outcome": outcome,
                    "seconds": round(sum(c.seconds for c in checks), 3),
                    "detail": reason,
                }
            )
        return out

    @property
    def verified(self) -> bool:
        """True only when the data comparison ran and passed, and nothing before it failed."""
        by_name = {s["name"]: s["outcome"] for s in self.stages()}
        needed = ["preflight", "verify"] + (["dump", "restore"] if self.mode == "migrate" else [])
        return (
            self.mode != "preflight-only"
            # A signal after verification (the key, the archive) leaves the data verified.
            and (self.interrupted is None or self.interrupted.get("stage") in AFTER_VERIFY)
            and all(by_name.get(n) == "passed" for n in needed)
            and self.comparison is not None
            and self.comparison.equal
            and self.schema_differences == []
        )

    @property
    def outage(self) -> dict[str, object] | None:
        """A migration's outage as the evidence shows it: from StackBlitz's stop (--stop-app; else
        the dump's start, StackBlitz having been stopped by hand before) to passed verification."""
        dump = [c for c in self.checks if c.stage == "dump" and c.outcome != "skipped"]
        if self.mode != "migrate" or not dump:
            return None
        first = min(dump, key=lambda c: c.started or 0.0)
        began = first.started or 0.0
        by_runbook = first.name == "test_stackblitz_is_stopped"
        verify = [c for c in self.checks if c.stage == "verify" and c.stopped]
        ended = max((c.stopped or 0.0 for c in verify), default=None) if self.verified else None
        return {
            "began_at": _iso(began),
            "began_with": "StackBlitz stopped by the runbook (--stop-app)"
            if by_runbook
            else "the dump began (StackBlitz was stopped beforehand)",
            "verified_at": _iso(ended) if ended else None,
            "seconds": round(ended - began, 1) if ended else None,
        }

    @property
    def stackblitz(self) -> dict[str, object] | None:
        """The StackBlitz version deployed, as KOTS reports it (Kubernetes mode, key stage)."""
        if "deployed_version" not in self.kots:
            return None
        return {
            "version": self.kots["deployed_version"],
            "kots_sequence": self.kots.get("deployed_sequence"),
        }

    @property
    def key_status(self) -> str:
        """Whether the run carried StackBlitz's encryption key forward, in words."""
        if self.encryption_key:
            return "captured"
        if self.no_key:
            return "not required (--no-key: StackBlitz stays installed as it is)"
        return "not captured" if self.mode == "migrate" else "not read"

    def to_dict(self) -> dict[str, object]:
        comparison = self.comparison
        return {
            "tool": "stackblitz-migrate",
            "mode": self.mode,
            "rehearsal": self.rehearsal,
            "database": self.database,
            "started_at": self.started_at,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "identity": self.identity,
            "verified": self.verified,
            "outcome": self.outcome.to_dict() if self.outcome else None,
            "interrupted": self.interrupted,
            "cleanup": self.cleanup,
            "stages": self.stages(),
            "checks": [c.__dict__ for c in self.checks],
            "not_applicable": self.not_applicable,
            "source": self.source,
            "target": self.target,
            "tools": self.tools,
            "preflight": self.preflight,
            "dump": self.dump,
            "restore": self.restore,
            "tables": comparison.tables if comparison else [],
            "sequences": comparison.sequences if comparison else [],
            "large_objects": comparison.large_objects if comparison else None,
            "data_differences": comparison.differences if comparison else None,
            "verification": self.verification,
            "row_digest": self.row_digest.evidence() if self.row_digest else None,
            "schema_objects": self.schema_objects,
            "schema_differences": self.schema_differences,
            "outage": self.outage,
            "seal": self.seal,
            "approved_preflight": self.approved_preflight,
            "stackblitz": self.stackblitz,
            "encryption_key": self.encryption_key,
            "key_status": self.key_status,
            "kots": self.kots,
            "workloads": self.workloads,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def write_json(run: Run, path: Path) -> dict[str, object]:
    """Write the run's evidence (atomically) and return what was written."""
    doc = run.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return json.loads(path.read_text())  # as written: plain JSON values


def leaked(directory: Path, secrets: set[str]) -> list[Path]:
    """Files under `directory` that contain any of the secrets (a last line of defence)."""
    needles = [s.encode() for s in secrets if len(s) >= 6]
    hits = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if any(n in data for n in needles):
                hits.append(path)
    return hits


def junit_properties(doc: dict[str, object]) -> dict[str, str]:
    """The run's key facts as flat JUnit properties, for the tools that file JUnit."""
    outcome = doc["outcome"] or {}
    source, target = doc["source"], doc["target"]
    identity = doc.get("identity") or {}
    outage = doc.get("outage") or {}
    dump = doc["dump"] or {}
    props: dict[str, object] = {
        "verified": doc["verified"],
        "outcome": outcome.get("status"),  # type: ignore[union-attr]
        "exit_status": outcome.get("exit_status"),  # type: ignore[union-attr]
        "change_id": identity.get("change_id"),  # type: ignore[union-attr]
        "mode": doc["mode"],
        "rehearsal": doc["rehearsal"],
        "database": doc["database"],
        "source_version": source.get("version"),  # type: ignore[union-attr]
        "target_version": target.get("version"),  # type: ignore[union-attr]
        "outage_seconds": outage.get("seconds"),  # type: ignore[union-attr]
        "key_status": doc["key_status"],
    }
    sha = dump.get("sha256")  # type: ignore[union-attr]
    if isinstance(sha, dict):  # --method stream: one archive per part
        props |= {f"dump_sha256:{part}": value for part, value in sha.items()}
    else:
        props["dump_sha256"] = sha
    return {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in props.items()
        if v is not None
    }
