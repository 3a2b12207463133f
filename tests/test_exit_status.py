"""The runbook's exit status is its contract: 0 only when every check that applies to the run
passed, 1 when a check failed, 6 when a check that applies was not done; evidence.json and the
terminal summary state the same outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from checks import outcome
from checks.evidence import CheckRecord
from fixtures import pgserver
from tests.runbook_cli import KIND_ABSENT, Outcome, direct_args, run_runbook, verdict_box


def _assert_outcome(run: Outcome, status: str, code: int, reason: str) -> dict:  # type: ignore[type-arg]
    __tracebackhide__ = True
    assert run.code == code, run.output[-3000:]
    doc = run.evidence
    stated = doc["outcome"]
    assert (stated["status"], stated["exit_status"]) == (status, code), stated
    assert reason in stated["reason"] and "\n" not in stated["reason"], stated
    said = [line.strip() for line in run.output.splitlines() if line.strip().startswith("outcome:")]
    assert said == [f"outcome: {status.upper()} (exit status {code}): {stated['reason']}"]
    _, props = run.junit_suite()  # and JUnit, for the machines
    assert (props["outcome"], props["exit_status"]) == (status, str(code))
    return doc


def _nothing_done(run: Outcome, reason: str) -> None:
    """A rehearsal that cannot start: one reason, exit status 6, nothing verified."""
    doc = _assert_outcome(run, "not done", outcome.NOT_DONE, f"nothing was done: {reason}")
    assert doc["verified"] is False
    assert {s["outcome"] for s in doc["stages"]} == {"skipped"}
    assert doc["outage"] is None  # nothing was stopped or dumped
    assert "Traceback" not in run.output


def test_kind_unavailable_is_not_done(tmp_path: Path) -> None:
    """kind's node image is missing (tests/test_kind.py runs kind where it is built): the reason
    names the step and what to run."""
    _nothing_done(
        run_runbook(tmp_path, "--rehearsal=kind", env=KIND_ABSENT),
        f"--rehearsal=kind cannot start here: step 'node image': Docker has no "
        f"{KIND_ABSENT['KIND_NODE_IMAGE']} (run scripts/setup --kind",
    )


def test_docker_unavailable_is_not_done(tmp_path: Path) -> None:
    """Docker is made unavailable to the runbook alone: its client talks to a socket that does
    not exist (the machine's engine keeps running for everybody else)."""
    run = run_runbook(
        tmp_path,
        "--rehearsal",
        "--rehearsal-backend",
        "docker",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"},
    )
    _nothing_done(run, "--rehearsal-backend docker cannot start here: no Docker engine")


def test_unreachable_cluster_is_not_done(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        f"clusters: [{{name: gone, cluster: {{server: 'https://127.0.0.1:{pgserver.free_port()}'}}}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    run = run_runbook(tmp_path, "--rehearsal=cluster", "--kubeconfig", str(kubeconfig))
    _nothing_done(run, "--rehearsal=cluster cannot start: the Kubernetes API server at https://")
    # the evidence names the cluster the run was pointed at, from the kubeconfig alone
    cluster = run.evidence["identity"]["cluster"]
    assert cluster["context"] == "gone" and cluster["server"].startswith("https://127.0.0.1:")
    assert f"context gone at {cluster['server']}" in verdict_box(run.reports / "report.html")


def test_missing_postgresql_programs_are_not_done(tmp_path: Path) -> None:
    run = run_runbook(tmp_path, "--rehearsal", "--rehearsal-source-version", "9")
    _nothing_done(
        run,
        "the rehearsal cannot start here: PostgreSQL 9's server programs are not on this host",
    )


def test_preflight_only_that_passes_is_0(tmp_path: Path) -> None:
    doc = _assert_outcome(
        run_runbook(tmp_path, "--rehearsal", "--preflight-only"),
        "passed",
        0,
        "every check that applies passed",
    )
    assert doc["verified"] is False  # nothing was compared: the outcome says what was asked


def test_preflight_refusal_is_1(tmp_path: Path) -> None:
    run = run_runbook(
        tmp_path,
        "--rehearsal",
        "--rehearsal-source-version",
        "18",
        "--rehearsal-target-version",
        "15",
    )
    doc = _assert_outcome(run, "failed", 1, "preflight: Refused: the target runs PostgreSQL 15")
    assert doc["verified"] is False
    later = {s["name"]: s["detail"] for s in doc["stages"] if s["name"] != "preflight"}
    assert set(later.values()) == {"stage 'preflight' failed"}, later


def test_deselected_checks_are_not_a_whole_run(
    small_db: str, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    args = direct_args(pg15, pg18, tmp_path, database=small_db)
    run = run_runbook(tmp_path, *args, "--preflight-only", "-k", "reachable")
    _assert_outcome(run, "not done", 6, "check(s) were deselected (-k/-m): not a whole run")


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True)


@pytest.fixture
def small_db(pg15: pgserver.Server, pg18: pgserver.Server) -> Iterator[str]:
    """A small database on the 15 source, none on the 18 target; dropped from both afterwards."""
    name = "sbm_exit_status"

    def drop() -> None:
        for server in (pg15, pg18):
            with _admin(server) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    drop()
    with _admin(pg15) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with _admin(pg15, name) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100) i")
    yield name
    drop()


def test_verification_failure_is_1(
    small_db: str, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    with _admin(pg18) as conn:
        conn.execute(f"CREATE DATABASE {small_db}")
    with _admin(pg18, small_db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 99) i")
    args = direct_args(pg15, pg18, tmp_path, database=small_db, key=False)
    run = run_runbook(tmp_path, *args, "--verify-only")
    doc = _assert_outcome(run, "failed", 1, "verify: VerificationFailed:")
    assert doc["verified"] is False
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["verify"]["outcome"] == "failed"
    # the key is not part of a verify-only run: no KOTS config needed
    assert stages["encryption key"]["outcome"] == "not applicable"


def test_migration_without_the_key_fails_the_key_stage(
    small_db: str, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    """The data is verified, but the reinstalled StackBlitz would not read it without the key:
    the run is not done, so it fails (1) and says how to capture the key or to waive it."""
    run = run_runbook(tmp_path, *direct_args(pg15, pg18, tmp_path, database=small_db, key=False))
    doc = _assert_outcome(run, "failed", 1, "encryption key: KeyNotFound: no --kots-config-file")
    assert "--no-key" in doc["outcome"]["reason"]
    assert doc["verified"] is True  # the data matched; the run as a whole did not pass
    assert doc["key_status"] == "not captured"
    assert "key: not captured" in run.output


def test_no_key_leaves_the_key_out_and_says_so(
    small_db: str, pg15: pgserver.Server, pg18: pgserver.Server, tmp_path: Path
) -> None:
    args = direct_args(pg15, pg18, tmp_path, database=small_db, key=False)
    run = run_runbook(tmp_path, *args, "--no-key")
    doc = _assert_outcome(run, "passed", 0, "every check that applies passed")
    assert doc["key_status"].startswith("not required (--no-key")
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["encryption key"]["outcome"] == "not applicable"
    assert stages["encryption key"]["detail"].startswith("--no-key:")
    assert doc["encryption_key"] is None


def _record(outcome_: str, *, stage: str = "verify") -> CheckRecord:
    return CheckRecord(stage, f"test_{outcome_}", outcome_, 0.1, f"why {outcome_}")


@pytest.mark.parametrize(
    ("records", "pytest_status", "expected"),
    [
        ([_record("passed")], 0, ("passed", 0)),
        ([_record("passed"), _record("skipped")], 0, ("not done", 6)),
        ([_record("failed"), _record("skipped")], 1, ("failed", 1)),
        ([], 5, ("not done", 6)),  # nothing collected
        ([_record("passed")], 130, ("interrupted", 130)),  # a signal's status is never changed
        ([_record("failed")], 143, ("interrupted", 143)),
        ([_record("passed")], 2, ("interrupted", 2)),
    ],
)
def test_decide(records: list[CheckRecord], pytest_status: int, expected: tuple[str, int]) -> None:
    decided = outcome.decide(records, pytest_status)
    assert (decided.status, decided.exit_status) == expected, decided
