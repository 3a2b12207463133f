"""The evidence is sealed: SHA256SUMS over its files, signed with the operator's SSH key, and the
README's one command proves it, or fails on a single edited byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.runbook_cli import KIND_ABSENT, Outcome, run_runbook

IDENTITY = "operator@example.com"


@pytest.fixture
def ssh_key(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh ed25519 key without passphrase, and the approver's allowed_signers file for it."""
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", IDENTITY, "-f", str(key)], check=True
    )
    allowed = tmp_path / "keys" / "allowed_signers"
    allowed.write_text(f"{IDENTITY} {key.with_suffix('.pub').read_text()}")
    return key, allowed


def approver_check(reports: Path, allowed: Path) -> subprocess.CompletedProcess[str]:
    """The README's command, as the approver runs it in the evidence directory."""
    return subprocess.run(
        f"sha256sum -c SHA256SUMS && ssh-keygen -Y verify -f {allowed} -I {IDENTITY} "
        "-n stackblitz-migrate -s SHA256SUMS.sig < SHA256SUMS",
        shell=True,
        cwd=reports,
        capture_output=True,
        text=True,
        check=False,
    )


def test_signed_evidence_verifies_and_one_edited_byte_does_not(
    tmp_path: Path, ssh_key: tuple[Path, Path]
) -> None:
    key, allowed = ssh_key
    run = run_runbook(tmp_path, "--rehearsal", "--preflight-only", "--sign-key", str(key))
    assert run.code == 0, run.output[-3000:]
    good = approver_check(run.reports, allowed)
    assert good.returncode == 0, good.stdout + good.stderr
    assert 'Good "stackblitz-migrate" signature for operator@example.com' in good.stdout
    listed = (run.reports / "SHA256SUMS").read_text().splitlines()
    assert [line.split()[1] for line in listed] == ["evidence.json", "junit.xml", "report.html"]
    seal = run.evidence["seal"]
    assert seal["signed_with"] == str(key) and seal["key_fingerprint"].startswith("SHA256:")
    private = key.read_text().splitlines()[1]  # a line of the key's own body
    assert all(private not in p.read_text() for p in run.reports.glob("*") if p.is_file())

    # One byte of the evidence changed: the sums no longer match.
    evidence = run.reports / "evidence.json"
    data = bytearray(evidence.read_bytes())
    at = data.index(b'"passed"') + 1
    data[at] = ord("f")  # "passed" -> "fassed"
    evidence.write_bytes(bytes(data))
    edited = approver_check(run.reports, allowed)
    assert edited.returncode != 0
    assert "evidence.json: FAILED" in edited.stdout

    # The editor recomputes SHA256SUMS too: now the signature fails.
    subprocess.run(
        "sha256sum evidence.json junit.xml report.html > SHA256SUMS",
        shell=True,
        cwd=run.reports,
        check=True,
    )
    resummed = approver_check(run.reports, allowed)
    assert resummed.returncode != 0
    assert "Could not verify signature" in resummed.stdout + resummed.stderr, resummed


def test_unsigned_runs_still_write_sums(tmp_path: Path) -> None:
    run: Outcome = run_runbook(tmp_path, "--rehearsal=kind", env=KIND_ABSENT)  # not done: fast
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=run.reports, capture_output=True, text=True
    )
    assert sums.returncode == 0 and sums.stdout.count(": OK") == 3, sums.stdout
    assert not (run.reports / "SHA256SUMS.sig").exists()
    assert run.evidence["seal"]["signed_with"] is None


def test_a_sign_key_others_can_read_is_refused(tmp_path: Path, ssh_key: tuple[Path, Path]) -> None:
    key, _ = ssh_key
    key.chmod(0o644)
    run = run_runbook(tmp_path, "--rehearsal", "--sign-key", str(key))
    assert run.code == 4, run.output[-2000:]
    errors = [line for line in run.output.splitlines() if line.startswith("ERROR: ")]
    assert errors == [f"ERROR: --sign-key {key} is readable by others: run `chmod 600 {key}`"]
    assert not run.reports.exists()
