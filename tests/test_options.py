"""Bad input to the runbook stops it at once with one line that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runbook_cli import run_runbook


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--source-dsn", "host=h", "--namespace", "stackblitz", "--target-host", "t"],
            "pick one",
        ),
        (
            ["--source-dsn", "host=h", "--source-container", "db", "--target-host", "t"],
            "--source-container and --stop-app are Kubernetes mode: pick one",
        ),
        (["--source-dsn", "host=h"], "no target: pass --target-host"),
        (
            ["--source-dsn", "postgresql://u:hunter22@h/db", "--target-host", "t"],
            "contains a password",
        ),
        (["--rehearsal", "--preflight-only", "--verify-only"], "exclude each other"),
        (["--rehearsal", "--target-host", "t"], "--rehearsal starts its own servers"),
        (["--source-dsn", "host=h", "--target-host", "t", "--target-port", "x"], "whole number"),
        (
            ["--source-dsn", "host=h", "--target-host", "t", "--target-password-file", "/nope"],
            "cannot read password file /nope",
        ),
        (["--rehearsal", "--method", "fast"], "--method 'fast': use one of stream, seed"),
        (["--rehearsal", "--jobs", "0"], "--jobs 0: give at least 1"),
        (["--rehearsal", "--jobs", "many"], "--jobs takes a whole number, not 'many'"),
        (
            ["--rehearsal", "--preflight-only", "--preflight-evidence", "/tmp"],
            "--preflight-evidence belongs to the migration run, not a preflight-only run",
        ),
        (
            ["--rehearsal", "--preflight-evidence", "/nope"],
            "--preflight-evidence /nope holds no evidence.json",
        ),
        (
            ["--rehearsal", "--no-key", "--key-out", "/tmp/k"],
            "--no-key skips the encryption key, --key-out asks for it: pick one",
        ),
        (["--rehearsal", "--pg-bindir", "/nope"], "--pg-bindir /nope is not a directory"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    outcome = run_runbook(tmp_path, *args)
    assert outcome.code == 4  # pytest's usage-error exit status
    errors = [line for line in outcome.output.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and message in errors[0], outcome.output
    assert "hunter22" not in outcome.output
    assert not outcome.reports.exists()  # nothing was written


def test_options_come_from_the_environment_too(tmp_path: Path) -> None:
    env = {"STACKBLITZ_MIGRATE_TARGET_HOST": "t", "STACKBLITZ_MIGRATE_TARGET_PORT": "x"}
    outcome = run_runbook(tmp_path, "--source-dsn", "host=h", env=env)
    assert "--target-port takes a whole number" in outcome.output


def test_method_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    outcome = run_runbook(tmp_path, "--rehearsal", env={"STACKBLITZ_MIGRATE_METHOD": "fast"})
    assert outcome.code == 4
    assert "--method 'fast': use one of stream, seed" in outcome.output
