"""Finds PostgreSQL programs (pg_dump, psql, initdb, ...) by major version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from checks import errors

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def cache_dir() -> Path:
    """Where the project keeps PostgreSQL binaries it installed.

    Root's home is private, and throwaway servers run as an unprivileged user who must be able
    to execute them, so root uses a world-readable system cache.
    """
    explicit = os.environ.get("STACKBLITZ_MIGRATE_CACHE")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/cache/stackblitz-migrate")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stackblitz-migrate"


@dataclass(frozen=True)
class Toolset:
    """One installation's bin directory, and the major.minor version it reports."""

    bindir: Path
    major: int
    minor: int

    def path(self, program: str) -> str:
        return str(self.bindir / program)

    def require(self, *programs: str) -> Toolset:
        """Itself, once every program is there (an install may lack some client programs)."""
        missing = [p for p in programs if not os.access(self.bindir / p, os.X_OK)]
        if missing:
            raise errors.ToolMissing(
                f"{self.bindir} has no {', '.join(missing)}: install PostgreSQL {self.major}'s "
                "client programs there, or pass --pg-bindir"
            )
        return self

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"


def _probe(bindir: Path) -> Toolset | None:
    program = bindir / "pg_dump"
    if not program.is_file() or not os.access(program, os.X_OK):
        return None
    out = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = _VERSION.search(out)
    if not match:
        return None
    return Toolset(bindir=bindir, major=int(match[1]), minor=int(match[2] or 0))


def candidate_dirs(extra: Path | None = None) -> list[Path]:
    """Bin directories worth probing, most specific first."""
    dirs: list[Path] = []
    if extra:
        dirs.append(extra)
    dirs += sorted(cache_dir().glob("pg/*/bin"))
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    return dirs


def installed(extra: Path | None = None) -> list[Toolset]:
    """Every distinct PostgreSQL installation found, one per major version, first found wins."""
    found: dict[int, Toolset] = {}
    for bindir in candidate_dirs(extra):
        toolset = _probe(bindir)
        if toolset and toolset.major not in found:
            found[toolset.major] = toolset
    return [found[m] for m in sorted(found)]


def for_major(major: int, extra: Path | None = None) -> Toolset:
    """The installation of exactly this major version (throwaway servers need an exact one)."""
    for toolset in installed(extra):
        if toolset.major == major:
            return toolset
    raise errors.ToolMissing(
        f"PostgreSQL {major} programs are not installed: run scripts/setup "
        f"(or `python scripts/install-postgres {major}`)"
    )


def for_migration(source_major: int, target_major: int, extra: Path | None = None) -> Toolset:
    """The pg_dump/psql to migrate with.

    pg_dump refuses servers newer than itself, and its output is only promised to load into
    its own major version or newer; so the target's major is best, and anything from the
    source's major up to it will do.
    """
    tools = installed(extra)
    for toolset in tools:
        if toolset.major == target_major:
            return toolset
    usable = [t for t in tools if source_major <= t.major <= target_major]
    if usable:
        return usable[-1]
    seen = ", ".join(t.version for t in tools) or "none"
    raise errors.ToolMissing(
        f"no pg_dump between PostgreSQL {source_major} and {target_major} is installed "
        f"(found: {seen}): install PostgreSQL {target_major} client programs or pass --pg-bindir"
    )
