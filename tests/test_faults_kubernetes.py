"""Faults in the outage window, Kubernetes mode, on the test cluster: the postgres pod deleted
mid-dump, the local `kubectl exec` killed, the port-forward killed during verification, a
--stop-app run interrupted once StackBlitz is scaled to zero, a copy that stalls. Each is
injected while data moves; then nothing may run on in the pod or stay in its temporary
directory, no session of the run (the held snapshot's) stays on the source, the target keeps no
partial copy, and the same command run again verifies. After verification: the held snapshot
lost before the artifact is written.

The database lives in a directory of the node (hostPath) so that it outlives the deleted pod, as
a real StatefulSet's volume does; `kubectl kots` is the stand-in of fixtures/bin.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from checks import held, kube, marker
from fixtures import pgserver
from fixtures import stackblitz_namespace as sbns
from fixtures.kots_sample import kots_config_values
from tests.runbook_cli import (
    Outcome,
    Running,
    run_runbook,
    start_runbook,
    stop_started,
    target_args,
)
from tests.test_kubernetes import cluster, host_target  # noqa: F401 (the same fixtures)

pytestmark = pytest.mark.cluster

NAMESPACE = "sbm-faults"
DB = sbns.DATABASE
SIZE = 100_000_000  # the stream through kubectl takes a few seconds
MOVING = 10_000_000
POD = kube.PostgresPod(NAMESPACE, "postgres-0", "postgres", sbns.USER)
KEY = "faults-key-" + secrets.token_hex(8)
VERSIONS = [{"versionLabel": "1.0.0", "sequence": 1, "status": "deployed", "deployedAt": "x"}]


@pytest.fixture(autouse=True)
def _no_run_left_behind() -> Iterator[None]:
    """A test that fails before its run ends stops the run: the next test must not meet it."""
    yield
    stop_started()


@pytest.fixture(scope="module")
def install(
    cluster: kube.Kube,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[sbns.Install]:
    data = tmp_path_factory.mktemp("pgdata")
    spec = sbns.Install(
        NAMESPACE,
        secrets.token_urlsafe(12),
        kots_configs={1: kots_config_values(KEY)},
        kots_versions=VERSIONS,
        host_data=str(data),
    )
    sbns.delete(cluster, NAMESPACE)
    subprocess.run(
        cluster.kubectl("wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=120s"),
        capture_output=True,
        check=False,
    )
    sbns.deploy(cluster, spec)
    sbns.seed(cluster, spec, size_bytes=SIZE)
    yield spec
    sbns.delete(cluster, NAMESPACE)


def _target(server: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        password=server.password,
        dbname=dbname,
        autocommit=True,
        connect_timeout=5,
    )


def _target_db(server: pgserver.Server) -> tuple[int, str | None] | None:
    with _target(server) as conn:
        return marker.state(conn, DB)


def _drop(server: pgserver.Server) -> None:
    with _target(server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _start(k8s: kube.Kube, server: pgserver.Server, tmp: Path, *extra: str) -> Running:
    return start_runbook(tmp, *_args(k8s, server, tmp, *extra), env=_env())


def _args(k8s: kube.Kube, server: pgserver.Server, tmp: Path, *extra: str) -> list[str]:
    return [
        "--kubeconfig",
        str(k8s.kubeconfig),
        "--namespace",
        NAMESPACE,
        "--stop-app",
        *target_args(server, tmp),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {"PATH": f"{sbns.STAND_IN_BIN}{os.pathsep}{os.environ['PATH']}"}


def _wait(run: Running, ready: object, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, run.log.read_text()[-3000:]
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


def _copying(server: pgserver.Server) -> bool:
    with _target(server) as conn:
        row = conn.execute(
            "SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s", (DB,)
        ).fetchone()
    return bool(row and row[0] >= MOVING)


def _verifying(server: pgserver.Server) -> bool:
    with _target(server) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND pid <> pg_backend_pid() AND (query LIKE %s OR query LIKE %s)",
            # the data digest, verification's own query, with either row digest (checks.rowdigest)
            ("%hashtextextended(%", "%::bit(64)::bigint%"),
        ).fetchone()
    return bool(row and row[0])


def _kubectl_child(run: Running, needle: str) -> int:
    """The pid of the runbook's kubectl whose argv holds `needle`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == run.proc.pid and "kubectl" in argv and needle in argv:
            return int(pid)
    raise AssertionError(f"no kubectl {needle} child of the runbook")


def _in_pod(k8s: kube.Kube, script: str) -> str:
    return subprocess.run(
        kube.exec_argv(k8s, POD, ["sh", "-c", script], stdin=False),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


_PROGRAMS = (
    'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done | '
    "grep -E '^(pg_dump|pg_restore|psql|tee|wc) ' || true"
)


def _pod_left(k8s: kube.Kube, timeout: float = 20) -> tuple[str, str]:
    """(programs of ours still running in the pod, what is in its /tmp), once both are empty or
    the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        running, tmp = _in_pod(k8s, _PROGRAMS).strip(), _in_pod(k8s, "ls -A /tmp").strip()
        if (not running and not tmp) or time.monotonic() > deadline:
            return running, tmp
        time.sleep(1)


def _pod_uid(k8s: kube.Kube) -> str:
    return subprocess.run(
        k8s.kubectl("get", "-n", NAMESPACE, "pod/postgres-0", "-o", "jsonpath={.metadata.uid}"),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def _wait_replaced(k8s: kube.Kube, deleted_uid: str, timeout: float = 180) -> None:
    """Until the StatefulSet's new postgres-0 exists: the deleted one can still read Ready while
    it terminates, and an exec into it then fails ("a completed pod")."""
    deadline = time.monotonic() + timeout
    while _pod_uid(k8s) in ("", deleted_uid):
        assert time.monotonic() < deadline, "postgres-0 was not replaced"
        time.sleep(1)


def _wait_pod_ready(k8s: kube.Kube) -> None:
    subprocess.run(
        k8s.kubectl(
            "wait", "-n", NAMESPACE, "pod/postgres-0", "--for=condition=Ready", "--timeout=180s"
        ),
        check=True,
        capture_output=True,
    )


def _assert_stopped_clean(
    outcome: Outcome, k8s: kube.Kube, server: pgserver.Server, *, code: int, stage: str
) -> dict:  # type: ignore[type-arg]
    assert outcome.code == code, outcome.output[-4000:]
    assert "Traceback" not in outcome.output, outcome.output[-4000:]
    for name in ("junit.xml", "report.html", "evidence.json"):
        assert (outcome.reports / name).is_file(), name
    doc = outcome.evidence
    assert doc["verified"] is False
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages[stage]["outcome"] == "failed", stages
    assert "\n" not in stages[stage]["detail"]
    _wait_pod_ready(k8s)
    assert _pod_left(k8s) == ("", "")
    assert _source_sessions(k8s) == ""  # the held snapshot released, no pg_dump left
    assert _target_db(server) is None  # the target was reachable: no partial copy stays
    with _target(server) as conn:  # and no restore session of the run goes on
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'stackblitz-mig%'"
        ).fetchone()
    assert row == (0,)
    return doc


def _source_sessions(k8s: kube.Kube, timeout: float = 20) -> str:
    """The run's sessions still on the source (the held snapshot's, a pg_dump's), read in the
    pod, once they are gone or the time is up."""
    query = (
        "SELECT application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
        "(application_name LIKE 'stackblitz-migrate%' OR application_name = 'pg_dump')"
    )
    deadline = time.monotonic() + timeout
    while True:
        found = _psql(k8s, query)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def _psql(k8s: kube.Kube, statement: str) -> str:
    return subprocess.run(
        kube.exec_argv(
            k8s, POD, ["psql", "-XAtq", "-U", sbns.USER, "-d", DB, "-c", statement], stdin=False
        ),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


def _rerun_verifies(k8s: kube.Kube, server: pgserver.Server, tmp: Path) -> None:
    again = run_runbook(tmp / "again", *_args(k8s, server, tmp), env=_env())
    assert again.code == 0, again.output[-4000:]
    assert again.evidence["verified"] is True
    found = _target_db(server)
    assert found is not None and not marker.is_ours(found[1])


def test_stop_app_run_interrupted_prints_how_to_start_stackblitz_again(
    cluster: kube.Kube,  # noqa: F811
    install: sbns.Install,
    host_target: pgserver.Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    _drop(host_target)
    run = _start(cluster, host_target, tmp_path)
    _wait(run, lambda: _copying(host_target), "the copy under way")
    run.proc.send_signal(signal.SIGTERM)
    outcome = run.finish(timeout=90)
    doc = _assert_stopped_clean(outcome, cluster, host_target, code=143, stage="dump")
    assert doc["interrupted"]["by"] == "SIGTERM" and doc["interrupted"]["stage"] == "dump"
    (app,) = [w for w in doc["workloads"] if w["name"] == "stackblitz-app"]
    command = f"kubectl scale -n {NAMESPACE} deployment/stackblitz-app --replicas=1"
    assert app["stopped"] is True and app["restore_command"] == command
    assert command in outcome.output  # on the terminal too
    report = (outcome.reports / "report.html").read_text()
    assert command in report
    _rerun_verifies(cluster, host_target, tmp_path)


@pytest.mark.parametrize(
    ("moment", "what", "kubectl", "stage"),
    [
        # the local kubectl exec of the stream killed while the copy is under way
        (_copying, "the copy under way", "pg_dump -Fc", "dump"),
        # the port-forward to the source killed while verification reads through it
        (_verifying, "verification under way", "port-forward", "verify"),
    ],
    ids=["exec-killed-mid-dump", "port-forward-killed-in-verify"],
)
def test_local_kubectl_killed_leaves_nothing_running_in_the_pod(
    cluster: kube.Kube,  # noqa: F811
    install: sbns.Install,
    host_target: pgserver.Server,  # noqa: F811
    tmp_path: Path,
    moment: Callable[[pgserver.Server], bool],
    what: str,
    kubectl: str,
    stage: str,
) -> None:
    _drop(host_target)
    run = _start(cluster, host_target, tmp_path)
    _wait(run, lambda: moment(host_target), what)
    os.kill(_kubectl_child(run, kubectl), signal.SIGKILL)
    outcome = run.finish(timeout=120)
    doc = _assert_stopped_clean(outcome, cluster, host_target, code=1, stage=stage)
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    _rerun_verifies(cluster, host_target, tmp_path)


def test_postgres_pod_deleted_mid_dump(
    cluster: kube.Kube,  # noqa: F811
    install: sbns.Install,
    host_target: pgserver.Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    _drop(host_target)
    run = _start(cluster, host_target, tmp_path)
    _wait(run, lambda: _copying(host_target), "the copy under way")
    deleted = _pod_uid(cluster)
    subprocess.run(
        cluster.kubectl("delete", "pod", "-n", NAMESPACE, "postgres-0", "--wait=false"),
        check=True,
        capture_output=True,
    )
    outcome = run.finish(timeout=180)
    _wait_replaced(cluster, deleted)
    doc = _assert_stopped_clean(outcome, cluster, host_target, code=1, stage="dump")
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    _rerun_verifies(cluster, host_target, tmp_path)


def test_stalled_copy_is_stopped_after_the_stall_timeout(
    cluster: kube.Kube,  # noqa: F811
    install: sbns.Install,
    host_target: pgserver.Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    """pg_dump frozen in the pod (SIGSTOP) stands for a black-holed network: the count the pod
    reports stops moving, and the stall watch stops the copy."""
    _drop(host_target)
    run = _start(cluster, host_target, tmp_path, "--stall-timeout", "3")
    _wait(run, lambda: _copying(host_target), "the copy under way")
    frozen = _in_pod(
        cluster,
        'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = pg_dump ] && '
        'kill -STOP "${p#/proc/}" && echo "${p#/proc/}"; done; true',
    ).split()
    assert len(frozen) == 1, frozen
    outcome = run.finish(timeout=120)
    doc = _assert_stopped_clean(outcome, cluster, host_target, code=1, stage="dump")
    assert "no bytes moved for 3 s" in {s["name"]: s for s in doc["stages"]}["dump"]["detail"]
    assert doc["cleanup"] == [f"the partly restored {DB} was dropped from the target"]
    _rerun_verifies(cluster, host_target, tmp_path)


# The held snapshot's session ended (a restarted source, a dropped port-forward), waiting until
# it has (PostgreSQL 14+: the pod's is 15).
END_HELD = (
    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
    f"WHERE application_name = '{held.APPLICATION_NAME}'"
)


def test_held_snapshot_lost_with_the_source_unchanged_archives_a_new_equal_one(
    cluster: kube.Kube,  # noqa: F811
    install: sbns.Install,
    host_target: pgserver.Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The session holding the copy's snapshot ends before stage 6 (run through the run's own
    port-forward, tests/runbook_hooks.py): the source unchanged since, the archive is dumped
    from a new snapshot, and says so."""
    _drop(host_target)
    _psql(cluster, "VACUUM ANALYZE")  # settled: autovacuum's ANALYZE would write meanwhile
    outcome = run_runbook(
        tmp_path,
        *_args(cluster, host_target, tmp_path, "-p", "tests.runbook_hooks"),
        env={**_env(), "SBM_TEST_BEFORE_ARTIFACT_SOURCE": END_HELD},
    )
    assert outcome.code == 0, outcome.output[-4000:]
    dump = outcome.evidence["dump"]
    assert dump["written"] is True and "new snapshot" in dump["snapshot"], dump
    # what pg_dump had written at the pod's last count (once a second): at most the archive
    assert 0 <= dump["streamed_bytes"] <= dump["bytes"], dump
    archive = Path(dump["path"])
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=archive, check=False)
    assert checked.returncode == 0
    assert sorted(p.name for p in archive.iterdir()) == sorted([*dump["sha256"], "SHA256SUMS"])
    assert _pod_left(cluster) == ("", "")
    assert _source_sessions(cluster) == ""
