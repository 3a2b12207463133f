"""Faults in the outage window (direct mode): each injected while data is moving, then the orderly
stop checked (exit status, evidence, one line, no process and no half copy left), then the same
command run again, which must migrate and verify without an extra flag.

Everything is real: the runbook runs as a subprocess in a session of its own, the servers are
real PostgreSQL servers stopped with pg_ctl, the full disk is a real tmpfs filled by another
process, the stall a real pg_dump stopped with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from checks import held, marker
from fixtures import pgserver, sample_db
from tests.runbook_cli import (
    Outcome,
    Running,
    direct_args,
    run_runbook,
    start_runbook,
    stop_started,
)

DB = "sbm_faults"
SIZE = 150_000_000  # the copy takes a few seconds here: long enough to hit it mid-way
MOVING = 15_000_000  # bytes of the target database that show the copy is under way


def _admin(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**server.connect_kwargs(dbname), autocommit=True, connect_timeout=5)


@pytest.fixture(autouse=True)
def _no_run_left_behind() -> Iterator[None]:
    """A test that fails before its run ends stops the run: the next test must not meet it."""
    yield
    stop_started()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[pgserver.Server, pgserver.Server]]:
    """A source and a target of this module's own: the tests stop and start them."""
    with pgserver.running_server(15) as source, pgserver.running_server(18) as target:
        with _admin(source) as conn:
            sample_db.create_database(conn, DB)
        with _admin(source, DB) as conn:
            sample_db.seed(conn, size_bytes=SIZE)
        yield source, target


@dataclass
class Scene:
    source: pgserver.Server
    target: pgserver.Server
    tmp: Path

    def args(self, *extra: str) -> list[str]:
        return [*direct_args(self.source, self.target, self.tmp, database=DB), *extra]


@pytest.fixture
def scene(servers: tuple[pgserver.Server, pgserver.Server], tmp_path: Path) -> Scene:
    source, target = servers
    with _admin(target) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
    return Scene(source, target, tmp_path)


def _target_db(target: pgserver.Server) -> tuple[int, str | None] | None:
    with _admin(target) as conn:
        return marker.state(conn, DB)


def _wait_copying(run: Running, target: pgserver.Server, timeout: float = 120) -> None:
    """Until the target database exists and holds data: the fault then hits a copy under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.log.read_text()[-3000:]
        with _admin(target) as conn:
            row = conn.execute(
                "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (DB,)
            ).fetchone()
        if row and row[0] >= MOVING:
            return
        time.sleep(0.1)
    raise AssertionError("the copy never started")


def _programs_for(*servers: pgserver.Server) -> list[str]:
    """pg_dump, pg_restore and psql processes talking to these servers (by their port)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(argv[0]).decode(errors="replace")
        text = b" ".join(argv).decode(errors="replace")
        if name in ("pg_dump", "pg_restore", "psql") and any(
            f"port={s.port}" in text for s in servers
        ):
            found.append(f"{pid} {text[:200]}")
    return found


def _child(run: Running, name: str, timeout: float = 30) -> int:
    """The pid of the runbook's child program `name`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if comm == name and ppid == run.proc.pid:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no {name} child of the runbook")


def _assert_orderly_stop(
    outcome: Outcome,
    scene: Scene,
    *,
    code: int,
    stage: str,
    words: list[str],
) -> dict:  # type: ignore[type-arg]
    """The issue's points 1-4: a bounded stop, nothing running, the evidence whole, one line."""
    assert outcome.code == code, outcome.output[-4000:]
    for name in ("junit.xml", "report.html", "evidence.json"):
        assert (outcome.reports / name).is_file(), name
    doc = outcome.evidence
    assert doc["verified"] is False
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages[stage]["outcome"] == "failed", stages
    assert "Traceback" not in outcome.output, outcome.output[-4000:]
    message = stages[stage]["detail"]
    assert "\n" not in message and all(w in message for w in words), message
    # nothing of ours runs on, and nothing half-copied stays in the workdir
    assert _programs_for(scene.source, scene.target) == []
    kept = [p for p in outcome.workdir.iterdir() if not p.name.endswith(".log")]
    assert kept == [], kept
    return doc


def _rerun_verifies(scene: Scene, *extra: str) -> Outcome:
    again = run_runbook(scene.tmp / "again", *scene.args(*extra))
    assert again.code == 0, again.output[-4000:]
    assert again.evidence["verified"] is True
    found = _target_db(scene.target)
    assert found is not None and not marker.is_ours(found[1])  # the mark came off
    return again


SIGNALS = {
    "SIGINT to the process group (Ctrl-C)": (signal.SIGINT, True, 130),
    "SIGTERM to the runbook (a cancelled job)": (signal.SIGTERM, False, 143),
    "SIGHUP to the runbook (a closed terminal)": (signal.SIGHUP, False, 129),
}


@pytest.mark.parametrize("fault", list(SIGNALS))
def test_signal_mid_stream_stops_cleans_up_and_reruns(scene: Scene, fault: str) -> None:
    sig, group, code = SIGNALS[fault]
    run = start_runbook(scene.tmp, *scene.args())
    _wait_copying(run, scene.target)
    started = time.monotonic()
    if group:
        os.killpg(run.proc.pid, sig)
    else:
        run.proc.send_signal(sig)
    outcome = run.finish(timeout=60)
    stopped_in = time.monotonic() - started
    print(f"{fault}: stopped in {stopped_in:.1f} s")
    assert stopped_in < 30
    doc = _assert_orderly_stop(
        outcome, scene, code=code, stage="dump", words=[f"interrupted by {sig.name}"]
    )
    assert doc["interrupted"] == {
        "by": sig.name,
        "stage": "dump",
        "check": "test_dump_is_streamed_into_target",
    }
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    assert _target_db(scene.target) is None
    later = {s["name"]: s for s in doc["stages"]}
    assert later["verify"]["outcome"] == "skipped"
    assert later["verify"]["detail"] == f"interrupted by {sig.name} during dump"
    report = (outcome.reports / "report.html").read_text()
    assert f"interrupted by {sig.name}" in report and "was dropped from the target" in report
    assert f"interrupted by {sig.name} during dump" in outcome.junit_skips()
    last = [line for line in outcome.output.splitlines() if line.startswith("sbm: ")][-1]
    assert last == (
        f"sbm: interrupted by {sig.name} during dump; the partly restored {DB} was dropped "
        "from the target; run the same command again"
    )
    _rerun_verifies(scene)


def test_target_stopped_mid_stream_leaves_a_marked_copy_the_rerun_replaces(scene: Scene) -> None:
    run = start_runbook(scene.tmp, *scene.args())
    _wait_copying(run, scene.target)
    pgserver.control(scene.target, "stop")
    try:
        outcome = run.finish(timeout=120)
    finally:
        pgserver.control(scene.target, "start")
    # Whichever restore noticed first: pg_restore, or a table's binary COPY (checks.tablecopy).
    doc = _assert_orderly_stop(
        outcome, scene, code=1, stage="dump", words=["stopped with exit code", "marked unverified"]
    )
    assert "may still be on the target" in doc["cleanup"][0]
    found = _target_db(scene.target)
    assert found is not None and marker.is_ours(found[1]), found
    assert "from run 20" in (found[1] or "")
    # --verify-only must not pass a copy a run did not finish
    check = run_runbook(scene.tmp / "verify-only", *scene.args("--verify-only"))
    assert check.code == 1, check.output[-3000:]
    failed = check.check("test_target_is_no_longer_marked_unverified")
    assert failed["outcome"] == "failed" and "unverified partial copy" in failed["message"]
    again = _rerun_verifies(scene)
    assert (
        "an unverified partial copy left by an earlier run"
        in (again.evidence["preflight"]["target_database"])
    )


def test_source_stopped_mid_stream_drops_the_partial_copy(scene: Scene) -> None:
    run = start_runbook(scene.tmp, *scene.args())
    _wait_copying(run, scene.target)
    pgserver.control(scene.source, "stop")
    try:
        outcome = run.finish(timeout=120)
    finally:
        pgserver.control(scene.source, "start")
    # pg_dump's or a table's binary COPY's, whichever read from the source when it stopped
    doc = _assert_orderly_stop(
        outcome, scene, code=1, stage="dump", words=["failed with exit code"]
    )
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    assert _target_db(scene.target) is None
    _rerun_verifies(scene)


def test_stalled_stream_is_stopped_after_the_stall_timeout(scene: Scene) -> None:
    """pg_dump frozen (SIGSTOP) stands for a black-holed network: no byte moves."""
    run = start_runbook(scene.tmp, *scene.args("--stall-timeout", "3"))
    _wait_copying(run, scene.target)
    frozen = _child(run, "pg_dump")
    os.kill(frozen, signal.SIGSTOP)
    outcome = run.finish(timeout=120)
    doc = _assert_orderly_stop(
        outcome, scene, code=1, stage="dump", words=["no bytes moved for 3 s", "--stall-timeout"]
    )
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    _rerun_verifies(scene)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs just big enough for preflight's check, which another process fills later."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    size = 2 * SIZE + 60_000_000  # preflight asks for twice the database
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _dump_growing(workdir: Path) -> bool:
    """--method seed: the gzip file being written holds data."""
    return any(p.stat().st_size >= MOVING // 2 for p in workdir.glob("*.sql.gz.partial"))


def test_full_workdir_is_one_line_and_leaves_no_partial_copy(
    scene: Scene, small_disk: Path
) -> None:
    """--method seed: filled by another process once the dump runs (after preflight's free-space
    check)."""
    run = start_runbook(scene.tmp, *scene.args("--method", "seed"), workdir=small_disk)
    deadline = time.monotonic() + 120
    while not _dump_growing(small_disk):  # the seed's dump touches the target once it is whole
        assert run.proc.poll() is None and time.monotonic() < deadline, run.log.read_text()
        time.sleep(0.05)
    _fill(small_disk)
    outcome = run.finish(timeout=120)
    (small_disk / "filler").unlink()
    doc = _assert_orderly_stop(
        outcome, scene, code=1, stage="dump", words=["the workdir filesystem is full", "MB free"]
    )
    assert "--workdir" in outcome.check("test_dump_is_taken")["message"]
    assert doc["cleanup"] == []
    assert _target_db(scene.target) is None
    _rerun_verifies(scene, "--method", "seed")


def _fill(disk: Path) -> None:
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=1M"],
        capture_output=True,
        check=False,  # it ends on "No space left on device"
    )


def _held_sessions(source: pgserver.Server) -> int:
    """Sessions holding a copy's snapshot for its archive (checks.held)."""
    with _admin(source) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (held.APPLICATION_NAME,),
        ).fetchone()
    return int(row[0]) if row else -1


def _assert_verified_without_archive(
    outcome: Outcome, scene: Scene, *, code: int, words: list[str]
) -> dict:  # type: ignore[type-arg]
    """Stage 6 (direct mode's archive, after verification) failed: the migration is done and
    stays, in one line; no half-written archive, no held snapshot, nothing running."""
    assert outcome.code == code, outcome.output[-4000:]
    for name in ("junit.xml", "report.html", "evidence.json"):
        assert (outcome.reports / name).is_file(), name
    doc = outcome.evidence
    assert doc["verified"] is True
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["artifact"]["outcome"] == "failed", stages
    assert "Traceback" not in outcome.output, outcome.output[-4000:]
    message = stages["artifact"]["detail"]
    assert "\n" not in message and all(w in message for w in words), message
    assert doc["dump"]["written"] is False
    assert _programs_for(scene.source, scene.target) == []
    assert [p for p in outcome.workdir.iterdir() if not p.name.endswith(".log")] == []
    assert _held_sessions(scene.source) == 0
    found = _target_db(scene.target)
    assert found is not None and not marker.is_ours(found[1]), found  # verified: it stays
    return doc


def test_full_workdir_while_the_archive_is_written_keeps_the_verified_target(
    scene: Scene, small_disk: Path
) -> None:
    """--method stream writes nothing to the workdir during the copy: the archive is dumped
    after verification (stage 6, checks.held). The workdir filled by another process during the
    copy fails that stage alone, in one line, and the verified target stays."""
    run = start_runbook(scene.tmp, *scene.args(), workdir=small_disk)
    _wait_copying(run, scene.target)
    _fill(small_disk)
    outcome = run.finish(timeout=120)
    (small_disk / "filler").unlink()
    doc = _assert_verified_without_archive(
        outcome, scene, code=1, words=["the workdir filesystem is full", "the target is verified"]
    )
    assert doc["cleanup"] == []


# The held snapshot's session ended (a restarted source, a dropped port-forward), waiting until
# it has (PostgreSQL 14+: the source here is 15).
END_HELD = (
    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
    f"WHERE application_name = '{held.APPLICATION_NAME}'"
)
CHANGE = "INSERT INTO schema_migrations (version) VALUES ('sbm-test-after-the-copy')"


def test_held_snapshot_lost_with_the_source_unchanged_archives_a_new_equal_one(
    scene: Scene,
) -> None:
    with _admin(scene.source, DB) as conn:
        conn.execute("VACUUM ANALYZE")  # settled: autovacuum's ANALYZE would write meanwhile
    outcome = run_runbook(
        scene.tmp,
        *scene.args("-p", "tests.runbook_hooks"),
        env={"SBM_TEST_BEFORE_ARTIFACT_SOURCE": END_HELD},
    )
    assert outcome.code == 0, outcome.output[-4000:]
    dump = outcome.evidence["dump"]
    assert dump["written"] is True and "new snapshot" in dump["snapshot"], dump
    archive = Path(dump["path"])
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=archive, check=False)
    assert checked.returncode == 0
    assert sorted(p.name for p in archive.iterdir()) == sorted([*dump["sha256"], "SHA256SUMS"])
    assert _held_sessions(scene.source) == 0


def test_held_snapshot_lost_and_the_source_changed_is_one_line_and_keeps_the_target(
    scene: Scene,
) -> None:
    try:
        outcome = run_runbook(
            scene.tmp,
            *scene.args("-p", "tests.runbook_hooks"),
            env={"SBM_TEST_BEFORE_ARTIFACT_SOURCE": f"{END_HELD}\n;\n{CHANGE}"},
        )
    finally:
        with _admin(scene.source, DB) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = 'sbm-test-after-the-copy'")
    _assert_verified_without_archive(
        outcome, scene, code=1, words=["snapshot of the source was lost", "the target is verified"]
    )


def test_signal_while_the_archive_is_written_keeps_the_verified_target(scene: Scene) -> None:
    run = start_runbook(scene.tmp, *scene.args())
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 1_000_000 for p in run.workdir.glob("*.dump.partial/*")):
        assert run.proc.poll() is None and time.monotonic() < deadline, run.log.read_text()
        time.sleep(0.01)
    run.proc.send_signal(signal.SIGTERM)
    outcome = run.finish(timeout=60)
    doc = _assert_verified_without_archive(
        outcome, scene, code=143, words=["interrupted by SIGTERM during artifact"]
    )
    assert doc["interrupted"]["stage"] == "artifact"


def test_signal_during_verification_drops_the_unverified_copy(scene: Scene) -> None:
    """The copy is whole but not yet verified: it is marked, so the run's end drops it.

    The run is held at stage 4's start (tests/runbook_hooks.py) for the signal to arrive there:
    with --verify-during-copy the scans ran during the copy and the final check alone is over
    too fast to hit."""
    held = scene.tmp / "verifying"
    run = start_runbook(
        scene.tmp,
        *scene.args("-p", "tests.runbook_hooks"),
        env={"SBM_TEST_HOLD_VERIFY": str(held)},
    )
    deadline = time.monotonic() + 120
    while not held.exists():
        assert run.proc.poll() is None and time.monotonic() < deadline, run.log.read_text()[-3000:]
        time.sleep(0.05)
    run.proc.send_signal(signal.SIGTERM)
    outcome = run.finish(timeout=60)
    doc = _assert_orderly_stop(
        outcome,
        scene,
        code=143,
        stage="verify",
        words=["interrupted by SIGTERM during verify"],
    )
    assert doc["interrupted"]["stage"] == "verify"
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    assert _target_db(scene.target) is None
    _rerun_verifies(scene)


def test_signal_during_the_seed_methods_restore(scene: Scene) -> None:
    """--method seed: the gzip file is whole and stays; what psql created is dropped."""
    run = start_runbook(scene.tmp, *scene.args("--method", "seed"))
    _wait_copying(run, scene.target)
    os.killpg(run.proc.pid, signal.SIGINT)
    outcome = run.finish(timeout=60)
    assert outcome.code == 130, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["interrupted"]["stage"] == "restore" and doc["verified"] is False
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    assert _programs_for(scene.source, scene.target) == []
    assert _target_db(scene.target) is None
    assert Path(doc["dump"]["path"]).is_file()  # proven whole before the restore began
    assert not list(outcome.workdir.glob("*.partial"))
    _rerun_verifies(scene, "--method", "seed")
