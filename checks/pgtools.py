"""Finds PostgreSQL programs (pg_dump, psql, initdb, ...) by major version, and says where it
looked and which packages to install when they are not there.

Direct mode and the rehearsal run PostgreSQL's programs on this host; Kubernetes mode runs the
pod's own and needs none here. The places, in order: --pg-bindir (then the only one), the
project's cache (scripts/setup), Debian/Ubuntu's /usr/lib/postgresql/N/bin, RHEL's (PGDG)
/usr/pgsql-N/bin, and pg_dump on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from checks import errors

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
CLIENT = ("pg_dump", "pg_restore", "psql")  # what a migration in direct mode runs here
SERVER = ("initdb", "pg_ctl", "postgres")  # what the rehearsal's throwaway servers run


def install_hint(major: int, *, server: bool = False) -> str:
    """The packages that hold PostgreSQL `major`'s client (or server) programs, per distribution:
    Debian and Ubuntu name them postgresql-client-N / postgresql-N (in the release, or from
    PGDG's apt repository for other versions), RHEL postgresqlN / postgresqlN-server (PGDG)."""
    if server:
        return (
            f"install postgresql-{major} (Debian/Ubuntu) or postgresql{major}-server (RHEL, "
            f"from PGDG); in a checkout, scripts/setup puts them in the project cache"
        )
    return (
        f"install postgresql-client-{major} (Debian/Ubuntu) or postgresql{major} (RHEL, from "
        f"PGDG), or pass --pg-bindir DIR"
    )


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

    def missing(self, programs: Sequence[str]) -> list[str]:
        return [p for p in programs if not os.access(self.bindir / p, os.X_OK)]

    def require(self, *programs: str) -> Toolset:
        """Itself, once every program is there (an install may lack some client programs)."""
        missing = self.missing(programs)
        if missing:
            raise errors.ToolMissing(
                f"{self.bindir} has PostgreSQL {self.version} but no {', '.join(missing)}: "
                f"{install_hint(self.major, server=not set(missing) <= set(CLIENT))}"
            )
        return self

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class Place:
    """A directory looked in, where it comes from, and what was found there."""

    bindir: Path
    origin: str
    toolset: Toolset | None
    note: str  # why nothing usable is there ("" when toolset is set)


def _probe(bindir: Path, origin: str) -> Place:
    program = bindir / "pg_dump"
    if not program.is_file() or not os.access(program, os.X_OK):
        return Place(bindir, origin, None, "no pg_dump")
    try:
        done = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Place(bindir, origin, None, f"pg_dump does not run ({e})")
    match = _VERSION.search(done.stdout)
    if done.returncode != 0 or not match:
        # e.g. the project cache's builds on an older C library than they were built for
        said = (done.stderr or done.stdout).strip().splitlines()
        why = said[0] if said else f"exit status {done.returncode}, no version"
        return Place(bindir, origin, None, f"pg_dump does not run ({why})")
    return Place(bindir, origin, Toolset(bindir, int(match[1]), int(match[2] or 0)), "")


_ORIGINS = ("the project cache", "Debian/Ubuntu", "RHEL (PGDG)", "PATH")


def candidate_dirs(extra: Path | None = None) -> list[tuple[Path, str]]:
    """Bin directories worth probing, most specific first, each with where it comes from.
    --pg-bindir is the operator's choice: then it is the only one."""
    if extra:
        return [(extra, "--pg-bindir")]
    dirs = [(d, _ORIGINS[0]) for d in sorted(cache_dir().glob("pg/*/bin"))]
    dirs += [(d, _ORIGINS[1]) for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"))]
    dirs += [(d, _ORIGINS[2]) for d in sorted(Path("/").glob("usr/pgsql-*/bin"))]
    on_path = shutil.which("pg_dump")
    # Debian's /usr/bin/pg_dump is a wrapper (pg_wrapper) over /usr/lib/postgresql/N/bin, looked
    # in above; RHEL's is a link into /usr/pgsql-N/bin.
    if on_path and Path(on_path).resolve().name == "pg_dump":
        dirs.append((Path(on_path).resolve().parent, _ORIGINS[3]))
    return dirs


def search(extra: Path | None = None) -> list[Place]:
    """Every place looked in, in order."""
    return [_probe(bindir, origin) for bindir, origin in candidate_dirs(extra)]


def installed(extra: Path | None = None) -> list[Toolset]:
    """Every distinct PostgreSQL installation found, one per major version, first found wins."""
    return _distinct(search(extra))


def _distinct(places: list[Place]) -> list[Toolset]:
    found: dict[int, Toolset] = {}
    for place in places:
        if place.toolset and place.toolset.major not in found:
            found[place.toolset.major] = place.toolset
    return [found[m] for m in sorted(found)]


def looked_in(places: list[Place], extra: Path | None = None) -> str:
    """Where the search looked, and what it found, in one line for a message or the evidence."""
    patterns = {
        "--pg-bindir": str(extra),
        _ORIGINS[0]: f"{cache_dir()}/pg/N/bin",
        _ORIGINS[1]: "/usr/lib/postgresql/N/bin",
        _ORIGINS[2]: "/usr/pgsql-N/bin",
        _ORIGINS[3]: "pg_dump",
    }
    said = []
    for origin in ("--pg-bindir",) if extra else _ORIGINS:
        found = [p for p in places if p.origin == origin]
        said += [
            f"{origin} {p.bindir}: " + (f"PostgreSQL {p.toolset.version}" if p.toolset else p.note)
            for p in found
        ] or [f"{origin} {patterns[origin]}: none"]
    return "; ".join(said)


def for_major(major: int, extra: Path | None = None) -> Toolset:
    """The installation of exactly this major version with its server programs (throwaway
    servers need an exact one)."""
    places = search(extra)
    for toolset in _distinct(places):
        if toolset.major == major:
            return toolset.require(*SERVER, *CLIENT)
    raise errors.ToolMissing(
        f"PostgreSQL {major}'s server programs are not on this host (looked in: "
        f"{looked_in(places, extra)}): {install_hint(major, server=True)}"
    )


def for_migration(source_major: int, target_major: int, extra: Path | None = None) -> Toolset:
    """The pg_dump/psql to migrate with.

    pg_dump refuses servers newer than itself, and its output is only promised to load into
    its own major version or newer; so the target's major is best, and anything from the
    source's major up to it will do.
    """
    places = search(extra)
    tools = _distinct(places)
    for toolset in tools:
        if toolset.major == target_major:
            return toolset.require(*CLIENT)
    usable = [t for t in tools if source_major <= t.major <= target_major]
    if usable:
        return usable[-1].require(*CLIENT)
    versions = (
        f"PostgreSQL {target_major}"
        if source_major == target_major
        else f"PostgreSQL {source_major} to {target_major}"
    )
    raise errors.ToolMissing(
        f"no pg_dump, pg_restore and psql of {versions} on this host (looked in: "
        f"{looked_in(places, extra)}): {install_hint(target_major)}"
    )
