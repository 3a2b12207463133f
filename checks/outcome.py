"""What a run's exit status means: decided once from its checks, stated the same way in
evidence.json, the terminal summary and the report.

0 only when every check that applies to the run's mode and method passed; 1 (pytest's own) when
a check failed; 6 when a check that applies was not done (skipped because the run could not do
it: a rehearsal that cannot start, a missing program, a stage that never ran); a status of 128
or more (a signal) and pytest's own 2 (interrupted), 3 (internal error) stay as they are.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from checks.evidence import CheckRecord

PASSED = 0
FAILED = 1  # pytest's ExitCode.TESTS_FAILED
NOT_DONE = 6  # ours: pytest uses 0-5
SIGNALLED = 128  # 128 + the signal's number, set by the signal handling


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, not done, interrupted, error
    exit_status: int
    reason: str  # one line

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status, "exit_status": self.exit_status, "reason": self.reason}


def decide(checks: list[CheckRecord], pytest_status: int, *, not_run: int = 0) -> Outcome:
    """The outcome of a run whose checks ended as recorded and whose pytest status so far is
    `pytest_status`; `not_run` counts checks that apply but were deselected (-k, -m)."""
    if pytest_status >= SIGNALLED:
        return Outcome("interrupted", pytest_status, f"stopped by {_signal_name(pytest_status)}")
    if pytest_status == 2:
        return Outcome("interrupted", pytest_status, "interrupted before every check ran")
    if pytest_status == 3:
        return Outcome("error", pytest_status, "pytest's internal error: see the output above")
    failed = [c for c in checks if c.outcome == "failed"]
    if failed or pytest_status == FAILED:
        first = failed[0] if failed else None
        reason = f"{first.stage}: {first.message or first.name}" if first else "a check failed"
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        return Outcome("failed", FAILED, reason + more)
    # Every recorded check applies: those that do not were never collected.
    skipped = [c for c in checks if c.outcome == "skipped"]
    if not checks:
        return Outcome("not done", NOT_DONE, "no check that applies to this run ran")
    if skipped:
        first = skipped[0]
        if len(skipped) == len(checks):
            reason = f"nothing was done: {first.message}"
        else:
            reason = f"stage '{first.stage}' was not done: {first.message}"
        reasons = {c.message for c in skipped}
        if len(reasons) > 1:
            reason += f" (and {len(reasons) - 1} other reason(s) in evidence.json)"
        return Outcome("not done", NOT_DONE, reason)
    if not_run:
        return Outcome(
            "not done", NOT_DONE, f"{not_run} check(s) were deselected (-k/-m): not a whole run"
        )
    return Outcome("passed", PASSED, "every check that applies passed")


def _signal_name(status: int) -> str:
    try:
        return signal.Signals(status - SIGNALLED).name
    except ValueError:
        return f"exit status {status}"
