"""The seam between the runbook and where the embedded database lives.

A source is reached through one small interface: the runbook asks it for a connection (to
inspect and verify), a dump (written to the workdir), and a restore of that dump into the
target run from wherever the target is reachable. `checks.direct` implements it for a database
the operator can reach directly; a Kubernetes source runs the same steps inside the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import psycopg

from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint


class Source(Protocol):
    kind: str  # "direct", "kubernetes", ...

    def describe(self) -> dict[str, object]:
        """Where the source is, for the evidence (never a secret)."""
        ...

    def connect(self) -> psycopg.Connection:
        """An autocommit connection to the source database."""
        ...

    def dump(self, dest: Path, *, target_major: int) -> DumpFile:
        """`pg_dump --if-exists -xcCO` of the database into `dest`, proven whole."""
        ...

    def restore(self, dump: DumpFile, target: Endpoint, *, log: Path) -> None:
        """Restore the dump into the target, stopping at the first error."""
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
