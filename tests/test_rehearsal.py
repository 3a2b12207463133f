"""The README's first command: a whole rehearsal on throwaway servers, verified end to end."""

from __future__ import annotations

import getpass
import socket
import subprocess
from pathlib import Path

import pytest

from fixtures import containers
from tests.runbook_cli import REPO, run_runbook, verdict_box


def _assert_verified(outcome, *, source: str, target: str) -> None:  # type: ignore[no-untyped-def]
    assert outcome.code == 0, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["verified"] is True
    assert doc["outcome"] == {
        "status": "passed",
        "exit_status": 0,
        "reason": "every check that applies passed",
    }
    assert "outcome: PASSED (exit status 0)" in outcome.output
    assert [s["outcome"] for s in doc["stages"]] == ["passed"] * 6  # stage 6: the archive
    # What does not apply is listed apart, with its reason, so a clean run shows no "skipped".
    assert outcome.junit_skips() == []
    assert all(c["outcome"] == "passed" for c in doc["checks"])
    not_applicable = {n["check"]: n["reason"] for n in doc["not_applicable"]}
    assert not_applicable["test_stackblitz_workloads_are_listed"].startswith("direct mode")
    assert not_applicable["test_dump_is_taken"].startswith("--method stream")
    assert doc["source"]["version"].startswith(source)
    assert doc["target"]["version"].startswith(target)
    names = {f"{t['schema']}.{t['name']}" for t in doc["tables"]}
    # partitions, a table without a primary key, a materialized view, a second schema
    assert {
        "public.events_default",
        "public.audit_log_raw",
        "public.project_file_stats",
        "analytics.daily_project_activity",
    } <= names
    assert all(t["match"] and t["source_rows"] == t["target_rows"] for t in doc["tables"])
    assert sum(t["source_rows"] for t in doc["tables"]) > 1000
    assert doc["large_objects"]["source_count"] >= 2
    assert doc["schema_differences"] == [] and doc["schema_objects"] > 100
    assert doc["encryption_key"]["fingerprint"].startswith("sha256:")
    for name in ("junit.xml", "report.html", "evidence.json"):
        assert (outcome.reports / name).stat().st_size > 0
    # the run's identity, in the evidence and in the report's verdict box
    identity = doc["identity"]
    assert identity["operator"] == {"user": getpass.getuser(), "host": socket.gethostname()}
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    assert identity["tool"]["commit"].startswith(head.stdout.strip())
    outage = doc["outage"]
    assert 0 < outage["seconds"] < 600 and outage["began_at"] <= outage["verified_at"]
    assert outage["began_with"].startswith("the dump began")
    box = verdict_box(outcome.reports / "report.html")
    assert box.startswith("PASSED: migration of stackblitz_production (rehearsal: embedded)")
    for fact in (f"outage {outage['seconds']} s", "data verified yes", "encryption key captured"):
        assert fact in box, box
    # JUnit for machines: the suite is the tool's, and carries the run's key facts
    name, props = outcome.junit_suite()
    assert name == "stackblitz-migrate"
    assert props["verified"] == "true" and props["exit_status"] == "0"
    assert props["outcome"] == "passed" and props["key_status"] == "captured"
    assert props["database"] == doc["database"]
    assert (props["source_version"], props["target_version"]) == (
        doc["source"]["version"],
        doc["target"]["version"],
    )
    dump_sums = {k.removeprefix("dump_sha256:"): v for k, v in props.items() if "sha256" in k}
    assert dump_sums == doc["dump"]["sha256"] and len(dump_sums) == 4


def test_rehearsal_older_source_to_newer_target(tmp_path: Path) -> None:
    outcome = run_runbook(tmp_path, "--rehearsal", "--change-id", "CHG-4711")
    _assert_verified(outcome, source="15.", target="18.")
    assert outcome.evidence["identity"]["change_id"] == "CHG-4711"
    assert outcome.junit_suite()[1]["change_id"] == "CHG-4711"
    assert "change CHG-4711" in verdict_box(outcome.reports / "report.html")


def test_rehearsal_same_major(tmp_path: Path) -> None:
    outcome = run_runbook(
        tmp_path,
        "--rehearsal",
        "--rehearsal-source-version",
        "18",
        "--rehearsal-target-version",
        "18",
    )
    _assert_verified(outcome, source="18.", target="18.")


@pytest.mark.docker
def test_rehearsal_with_a_testcontainers_source(tmp_path: Path) -> None:
    reason = containers.docker_available()
    if reason:
        pytest.skip(reason)
    outcome = run_runbook(
        tmp_path,
        "--rehearsal",
        "--rehearsal-backend",
        "docker",
        "--rehearsal-target-version",
        "15",
    )
    _assert_verified(outcome, source="15.", target="15.")
