"""The project's error tree: one root, each error a one-line message that says what to do."""

from __future__ import annotations


class MigrationError(Exception):
    """Root of every error this project raises on purpose."""


class UsageError(MigrationError):
    """The operator's input is wrong; the message says how to fix it."""


class ConnectionFailed(MigrationError):
    """A server could not be reached or refused the login."""


class ToolMissing(MigrationError):
    """A PostgreSQL client program of the needed version is not installed."""


class DumpFailed(MigrationError):
    """pg_dump failed, or its output is not a whole dump."""


class RestoreFailed(MigrationError):
    """psql stopped on an error while restoring the dump."""


class KeyNotFound(MigrationError):
    """The StackBlitz encryption key could not be read from the KOTS config."""


class Refused(MigrationError):
    """A preflight check refuses to let the migration go ahead."""


class VerificationFailed(MigrationError):
    """Source and target differ after the restore."""


class RehearsalUnavailable(MigrationError):
    """The rehearsal's throwaway servers or cluster cannot start on this machine."""


class Stopped(MigrationError):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run; it cleaned up and stopped."""


class Stalled(MigrationError):
    """No bytes moved for --stall-timeout seconds: a peer is gone or the network holds them."""


class WorkdirFull(MigrationError):
    """The workdir's filesystem filled up while the dump was written there."""


def add_note(e: BaseException, note: str) -> None:
    """`e.add_note(note)` on Python 3.9 and 3.10 too: the note goes where 3.11 keeps it,
    `__notes__`, which `fixtures.faults` reads (3.11's traceback also prints it)."""
    e.__notes__ = [*getattr(e, "__notes__", ()), note]  # type: ignore[attr-defined]
