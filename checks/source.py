"""The seam between the runbook and where the embedded database lives.

A source is reached through one small interface: the runbook asks it for a connection (to
inspect and verify), and either a dump (written to the workdir) and then a restore of that dump
into the target, or both at once as a stream from a held snapshot, whose artifact is dumped
again from that snapshot after verification; restores run from wherever the target is
reachable. `checks.direct` implements it for a database
the operator can reach directly; a Kubernetes source runs the same steps inside the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import psycopg

from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint
from checks.overlap import Early
from checks.progress import Progress
from checks.stream import Part


class Source(Protocol):
    kind: str  # "direct", "kubernetes", ...

    def describe(self) -> dict[str, object]:
        """Where the source is, for the evidence (never a secret)."""
        ...

    def connect(self) -> psycopg.Connection:
        """An autocommit connection to the source database."""
        ...

    def dump(self, dest: Path, *, target_major: int, progress: Progress | None = None) -> DumpFile:
        """--method seed: `pg_dump --if-exists -xcCO` of the database into `dest` (gzip),
        proven whole."""
        ...

    def restore(
        self, dump: DumpFile, target: Endpoint, *, log: Path, progress: Progress | None = None
    ) -> None:
        """--method seed: restore the dump into the target, stopping at the first error."""
        ...

    def stream(
        self,
        target: Endpoint,
        *,
        target_major: int,
        log: Path,
        progress: Progress | None = None,
        early: Early | None = None,
    ) -> list[Part]:
        """--method stream: pg_dump's archive(s) restored by pg_restore as they are written,
        from a snapshot held for the artifact (checks.held), each restore stopping at its first
        error; no file is written. `log` is the prefix of the logs' names. With `early`, the
        source calls its start_source, loaded and all_loaded as the copy goes, so that
        verification overlaps it (checks.overlap)."""
        ...

    # --method stream: the parts restored, while their artifact waits for stage 6 (dumped again
    # from the held snapshot after verification, off the outage); None when there is none.
    kept: list[Part] | None
    artifact_snapshot: str | None  # stage 6: which snapshot the artifact was dumped from

    def kept_evidence(self) -> dict[str, object]:
        """What the dump's evidence says of the artifact until stage 6 writes it."""
        ...

    def fetch_kept(self, directory: Path, *, progress: Progress | None = None) -> list[Part]:
        """Stage 6: the artifact written into `directory`, each part with its size and SHA-256;
        DumpFailed, saying the target is verified and kept, when it cannot be."""
        ...

    def remove_kept(self) -> None:
        """Release the held snapshot (idempotent)."""
        ...

    def restore_schema(self, into: Endpoint, *, target_major: int, log: Path) -> None:
        """The preflight's scratch restore: pg_dump of the schema alone (checks.scratch's
        flags) into pg_restore of `into`'s existing database, from where the stream's restore
        runs and with its flags; both programs' messages go to `log`. RestoreFailed when either
        fails; nothing keeps running once it returns or raises."""
        ...

    def tool_versions(self) -> dict[str, str]:
        """The pg_dump and psql versions used, for the evidence."""
        ...

    def secrets(self) -> set[str]:
        """Passwords this source knows, which no report may contain."""
        ...

    def close(self) -> None:
        """Release what the source holds open (a port-forward, say)."""
        ...
