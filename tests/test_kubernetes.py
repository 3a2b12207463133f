"""Kubernetes mode on a real cluster (tests/cluster: kube-apiserver, kubelet, containerd here).

The KOTS admin console cannot run here, so `kubectl kots` is the stand-in in fixtures/bin; the
truncated-stream test wraps kubectl to cut its output short, as kubectl's own exec bug does
(kubernetes issue 124571), which cannot be triggered on demand.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import yaml

from checks import errors, kube, pgtools
from fixtures import pgserver
from fixtures import stackblitz_namespace as sbns
from fixtures.kots_sample import kots_config_values
from tests import clusters
from tests.runbook_cli import Outcome, postgresql_program_dirs, run_runbook, target_args

pytestmark = pytest.mark.cluster

KEY = "kube-key-" + secrets.token_hex(8)
OLD_KEY = "old-key-" + secrets.token_hex(8)
VERSIONS = [  # newest first, as the CLI prints them: the top row is not the deployed one
    {"versionLabel": "1.3.0", "sequence": 5, "status": "pending", "deployedAt": ""},
    {
        "versionLabel": "1.2.0",
        "sequence": 4,
        "status": "deployed",
        "deployedAt": "2026-11-20T10:00:00Z",
    },
    {
        "versionLabel": "1.1.0",
        "sequence": 3,
        "status": "deployed",
        "deployedAt": "2026-10-01T10:00:00Z",
    },
]


@pytest.fixture(scope="session")
def cluster(test_cluster: clusters.TestCluster) -> kube.Kube:
    return test_cluster.kube


@pytest.fixture(scope="session")
def host_target(test_cluster: clusters.TestCluster) -> Iterator[pgserver.Server]:
    """The managed server: outside the cluster, reachable from pods at the host's address."""
    ip, cidr = test_cluster.host_ip, test_cluster.client_cidr
    with pgserver.running_server(18, also_listen_on=ip, allow_cidr=cidr) as server:
        yield pgserver.Server(ip, server.port, server.user, server.password, 18)


def _install(namespace: str, **kw: object) -> sbns.Install:
    return sbns.Install(
        namespace,
        secrets.token_urlsafe(12),
        kots_configs={3: kots_config_values(OLD_KEY), 4: kots_config_values(KEY)},
        kots_versions=VERSIONS,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def deployed(cluster: kube.Kube, request: pytest.FixtureRequest) -> Iterator[sbns.Install]:
    """A StackBlitz-like namespace with a seeded database; deleted afterwards."""
    namespace = request.param if hasattr(request, "param") else "stackblitz"
    install = _install(namespace)
    sbns.delete(cluster, install.namespace)
    _wait_gone(cluster, install.namespace)
    sbns.deploy(cluster, install)
    sbns.seed(cluster, install)
    yield install
    sbns.delete(cluster, install.namespace)
    # Gone before the next test deploys: its pods' network teardown then cannot overlap the
    # next copy (a pod-to-host connection timed out once in a full run, right after one).
    _wait_gone(cluster, install.namespace)


def _wait_gone(cluster: kube.Kube, namespace: str) -> None:
    subprocess.run(
        cluster.kubectl("wait", "--for=delete", f"namespace/{namespace}", "--timeout=120s"),
        capture_output=True,
        check=False,
    )


def _args(cluster: kube.Kube, target: pgserver.Server, tmp: Path) -> list[str]:
    return ["--kubeconfig", str(cluster.kubeconfig), *target_args(target, tmp)]


def _connect_target(target: pgserver.Server, dbname: str = "postgres") -> psycopg.Connection:
    """The host's target server from the host (pods use its bridge address instead)."""
    return psycopg.connect(
        host="127.0.0.1",
        port=target.port,
        user=target.user,
        password=target.password,
        dbname=dbname,
        autocommit=True,
    )


def _env(extra_path: Path | None = None) -> dict[str, str]:
    path = os.pathsep.join(
        p for p in (str(extra_path or ""), str(sbns.STAND_IN_BIN), os.environ["PATH"]) if p
    )
    return {"PATH": path}


def _drop_target(target: pgserver.Server) -> None:
    with _connect_target(target) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {sbns.DATABASE} WITH (FORCE)")


def test_kubernetes_migration_is_verified(
    test_cluster: clusters.TestCluster,
    deployed: sbns.Install,
    host_target: pgserver.Server,
    tmp_path: Path,
) -> None:
    """The whole migration, on a host where no PostgreSQL program can be found: Kubernetes mode
    runs the pod's own, and here only kubectl and its KOTS plugin (psycopg brings its libpq)."""
    cluster = test_cluster.kube
    _drop_target(host_target)
    key_out = tmp_path / "key"
    outcome = run_runbook(
        tmp_path,
        *_args(cluster, host_target, tmp_path),
        "--stop-app",
        "--verify-during-copy",
        "--key-out",
        str(key_out),
        env=_env(),
        hide=postgresql_program_dirs(),
    )
    assert outcome.code == 0, outcome.output[-4000:]
    doc = outcome.evidence
    assert doc["preflight"]["host_programs"]["needs"] == (
        "on this host: kubectl, kubectl-kots (no PostgreSQL program); "
        "in the pod: pg_dump, pg_restore, psql"
    )
    assert doc["verified"] is True
    # the source digested from the pod's pg_dump snapshot while the data streamed, still current
    found = doc["verification"]["source"]
    assert found["snapshot_still_current"] is True, doc["verification"]
    assert found["tables_digested_during_copy"] == len(doc["tables"])
    assert doc["row_digest"]["digest"] == "hashtextextended"  # the pod's 15 agrees with 18
    assert doc["source"]["kind"] == "kubernetes" and doc["dump"]["method"] == "stream"
    assert (doc["source"]["namespace"], doc["source"]["pod"]) == ("stackblitz", "postgres-0")
    assert doc["tools"]["pg_dump"].startswith("15.")  # the pod's own pg_dump
    # the write freeze: the app was listed, stopped and can be started again
    (app,) = [w for w in doc["workloads"] if w["name"] == "stackblitz-app"]
    assert app["replicas"] == 1 and app["stopped"] is True
    assert "kubectl scale -n stackblitz deployment/stackblitz-app --replicas=1" in outcome.output
    assert not any("kots" in w["name"] or "postgres" in w["name"] for w in doc["workloads"])
    # the key of the deployed sequence (4), not of the newest row (5, pending) nor of 3
    assert doc["kots"]["deployed_sequence"] == 4
    assert key_out.read_text() == KEY + "\n"
    # the run's identity: the StackBlitz version deployed, the cluster, the outage from the stop
    assert doc["stackblitz"] == {"version": "1.2.0", "kots_sequence": 4}
    assert doc["identity"]["cluster"]["server"].startswith("https://")
    assert doc["outage"]["began_with"] == "StackBlitz stopped by the runbook (--stop-app)"
    assert doc["outage"]["seconds"] > 0
    _assert_artifact_dumped_after_verification(doc)
    # bytea with every byte value made it across
    with _connect_target(host_target, sbns.DATABASE) as conn:
        seen = conn.execute(
            "SELECT count(DISTINCT get_byte(content, i)) FROM project_files, "
            "generate_series(0, 255) i WHERE i < octet_length(content)"
        ).fetchone()
    assert seen == (256,)
    _assert_no_secret_left(test_cluster, deployed, host_target, outcome)
    _assert_archive_restores_by_hand(doc, host_target)
    _assert_the_pod_counts_what_a_program_writes(cluster, deployed)


def _assert_artifact_dumped_after_verification(doc: dict) -> None:  # type: ignore[type-arg]
    """The copy wrote nothing: after verification, off the outage, the pod's pg_dump ran again
    from the copy's own snapshot (held since), out through kubectl exec, and its archive is
    in the workdir with a SHA256SUMS that checks."""
    dump = doc["dump"]
    assert "kubectl exec" in dump["artifact"] and "after verification" in dump["artifact"], dump
    assert dump["written"] is True and dump["snapshot"] == "the copy's own snapshot", dump
    (name,) = dump["sha256"]
    archive = Path(dump["path"])
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=archive, check=False)
    assert checked.returncode == 0
    assert sorted(p.name for p in archive.iterdir()) == sorted([name, "SHA256SUMS"])
    assert (archive / name).stat().st_size == dump["bytes"]
    assert "artifact" not in doc["preflight"]  # no room in the pod to decide on any more
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["artifact"]["outcome"] == "passed"
    (written,) = [c for c in doc["checks"] if c["stage"] == "artifact"]
    verified_at = datetime.fromisoformat(doc["outage"]["verified_at"]).timestamp()
    assert written["started"] >= verified_at - 1  # the outage ends before the archive begins


def _assert_the_pod_counts_what_a_program_writes(cluster: kube.Kube, install: sbns.Install) -> None:
    """What the stream's progress rests on (kubernetes.STREAM_SCRIPT): in an exec into the pod,
    a program's written bytes can be read from /proc/<pid>/io (the copy here is too quick to
    show it in the run's own progress line)."""
    pod = kube.PostgresPod(install.namespace, "postgres-0", "postgres", sbns.USER)
    script = (
        "{ head -c 5000000 /dev/zero; sleep 2; } > /dev/null & p=$!; sleep 1; "
        "sed -n 's/^wchar: //p' /proc/$p/io; wait"
    )
    done = subprocess.run(
        kube.exec_argv(cluster, pod, ["sh", "-c", script], stdin=False),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "5000000", done


def _table_counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = conn.execute(
        "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1"
    ).fetchall()
    counts = {}
    for (table,) in tables:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        counts[str(table)] = int(row[0]) if row else -1
    return counts


def _assert_archive_restores_by_hand(doc: dict, target: pgserver.Server) -> None:  # type: ignore[type-arg]
    """The evidence's own pg_restore command, run by hand on this host into an empty target,
    gives back the verified copy's tables and rows."""
    with _connect_target(target, sbns.DATABASE) as conn:
        migrated = _table_counts(conn)
    _drop_target(target)
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(target.port)}
    env.update(PGUSER=target.user, PGPASSWORD=target.password)
    bindir = pgtools.for_major(18).bindir
    for command in doc["dump"]["restore_with"]:
        argv = shlex.split(command)
        subprocess.run([str(bindir / argv[0]), *argv[1:]], env=env, check=True)
    with _connect_target(target, sbns.DATABASE) as conn:
        assert _table_counts(conn) == migrated and migrated


def _assert_no_secret_left(
    test_cluster: clusters.TestCluster,
    install: sbns.Install,
    target: pgserver.Server,
    outcome: Outcome,
    *,
    container: str = "postgres",
) -> None:
    cluster = test_cluster.kube
    secrets_ = [target.password, install.password, KEY]
    # Every exec's argv is in the request URIs the API server logs (tests/cluster/up audits;
    # kind's API server keeps no audit log, so there only the files and the pod are checked).
    if test_cluster.audit_log:
        raw = test_cluster.audit_log.read_text(errors="replace")
        audit = raw + urllib.parse.unquote_plus(raw)
        # the stream's dump and restore (--method seed's are in the cluster rehearsal's run)
        assert "pg_dump -Fc -Z0 -x" in audit and "pg_restore -C -c --if-exists -O -x" in audit
        assert not any(s in audit for s in secrets_)
    for path in (*outcome.reports.rglob("*"), *outcome.workdir.rglob("*")):
        if path.is_file():
            assert not any(s.encode() in path.read_bytes() for s in secrets_), path
    # nothing the restore brought into the pod stays there: no temp dir, no password in a file
    pod = kube.PostgresPod(install.namespace, "postgres-0", container, sbns.USER)
    leftover = subprocess.run(
        kube.exec_argv(
            cluster,
            pod,
            [
                "sh",
                "-c",
                'IFS= read -r n; ls /tmp; grep -rlF "$n" /tmp /root '
                "/var/lib/postgresql 2>/dev/null; true",
            ],
            stdin=True,
        ),
        input=target.password + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert leftover.strip() == "", leftover


@pytest.mark.parametrize(
    ("namespace", "install", "message"),
    [
        ("sbm-two", {"postgres_pods": 2}, "several postgres pods in namespace sbm-two"),
        ("sbm-unready", {"ready": False}, "ready=False"),
    ],
)
def test_discovery_refuses_what_it_cannot_pick(
    cluster: kube.Kube,
    namespace: str,
    install: dict,
    message: str,  # type: ignore[type-arg]
) -> None:
    spec = _install(namespace, **install)
    sbns.delete(cluster, namespace)
    _wait_gone(cluster, namespace)
    try:
        sbns.deploy(cluster, spec, app=False)
        if not spec.ready:
            subprocess.run(
                cluster.kubectl(
                    "wait",
                    "-n",
                    namespace,
                    "pod/postgres-0",
                    "--for=jsonpath={.status.phase}=Running",
                    "--timeout=120s",
                ),
                check=True,
                capture_output=True,
            )
        with pytest.raises(errors.MigrationError, match=message) as info:
            kube.find_postgres_pod(cluster, namespace=namespace, pod_name=None)
        assert "\n" not in str(info.value)
        if spec.postgres_pods == 2:  # --source-pod settles it
            pod = kube.find_postgres_pod(cluster, namespace=namespace, pod_name="postgres-2-0")
            assert pod.name == "postgres-2-0" and pod.user == sbns.USER
    finally:
        sbns.delete(cluster, namespace)


def test_discovery_without_a_pod_names_what_to_pass(cluster: kube.Kube) -> None:
    with pytest.raises(errors.UsageError, match=r"no postgres pod .* in namespace\(s\) nope"):
        kube.find_postgres_pod(cluster, namespace="nope", pod_name=None)
    # tests/cluster runs no pods there ("saw: no pods at all"); kind, its control plane's
    seen = r"in namespace\(s\) kube-system \(saw: [^)]*\): pass --namespace"
    with pytest.raises(errors.UsageError, match=seen):
        kube.find_postgres_pod(cluster, namespace="kube-system", pod_name=None)


def test_the_pods_bridge_keeps_a_mac_of_its_own(test_cluster: clusters.TestCluster) -> None:
    """tests/cluster's bridge (the pods' way to this host) has its MAC set, so the kernel never
    changes it: left unset, it is its lowest port's, and it changed whenever a pod came or
    went, and pods that had cached the old one could not reach the target for two minutes (CI
    failed so, at random). kind's bridges are Docker's, which sets theirs."""
    if test_cluster.name != "own":
        pytest.skip("kind's network is Docker's")
    device = Path("/sys/class/net") / os.environ.get("BRIDGE", "sbm0")  # tests/cluster/env.sh
    # addr_assign_type 3 is NET_ADDR_SET: set by a user, never recomputed from the ports.
    assert (device / "addr_assign_type").read_text().strip() == "3"
    assert (device / "address").read_text().strip() == os.environ.get(
        "BRIDGE_MAC", "02:73:62:6d:00:01"
    )


def _kubectl_wrapper(tmp_path: Path, pattern: str, branch: str) -> Path:
    """A directory holding a kubectl that runs the shell lines `branch` when its argv matches
    `pattern` (a shell case pattern; $real is the real kubectl there), and is the real one
    otherwise."""
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    real = subprocess.run(["which", "kubectl"], capture_output=True, text=True).stdout.strip()
    (wrapper / "kubectl").write_text(
        f"#!/bin/sh\nreal={shlex.quote(real)}\n"
        f'case "$*" in {pattern})\n{branch}esac\n'
        'exec "$real" "$@"\n'
    )
    (wrapper / "kubectl").chmod(0o755)
    return wrapper


def _kubectl_cutting(tmp_path: Path, pattern: str, *, cut: str, once: bool = False) -> Path:
    """A kubectl whose exec output ends early, with exit code 0, when its argv matches
    `pattern` (a shell case pattern), like kubernetes issue 124571: `cut` is a shell command
    that reads the exec's stdout, passes on what it lets through and returns; kubectl is then
    killed. `once`: only the first such exec."""
    done = tmp_path / "cut-once"
    return _kubectl_wrapper(
        tmp_path,
        pattern,
        (f'  if [ -e {done} ]; then exec "$real" "$@"; fi; : > {done}\n' if once else "")
        # (a background job's stdin is /dev/null unless given: the scripts read theirs)
        + '  out=$(mktemp -u); mkfifo "$out"; exec 4<&0; "$real" "$@" <&4 > "$out" & k=$!\n'
        f'  {cut} < "$out"; kill -9 $k; rm -f "$out"; exit 0;;\n',
    )


# The stream's exec (its progress lines) cut after the first, as the copy begins; the seed's and
# the artifact's (the archive itself) after 200 kB.
FIRST_LINE = "head -n 1"
SOME = "head -c 200000"


@pytest.mark.parametrize(
    ("method", "pattern", "cut"),
    [("stream", "*sbm-progress*", FIRST_LINE), ("seed", "*pg_dump*", SOME)],
    ids=["stream", "seed"],
)
def test_dump_stream_cut_short_is_caught_and_leaves_no_database(
    cluster: kube.Kube,
    deployed: sbns.Install,
    host_target: pgserver.Server,
    tmp_path: Path,
    method: str,
    pattern: str,
    cut: str,
) -> None:
    """A kubectl that ends the dump's exec stream early and exits 0, like kubernetes issue
    124571. --method seed finds out before any restore; --method stream, whose restore has
    begun in the pod, misses pg_dump's marked status, and drops what it created."""
    _drop_target(host_target)
    outcome = run_runbook(
        tmp_path,
        *_args(cluster, host_target, tmp_path),
        "--allow-active-connections",
        "--method",
        method,
        env=_env(_kubectl_cutting(tmp_path, pattern, cut=cut)),
    )
    assert outcome.code == 1, outcome.output[-3000:]
    check = {"stream": "test_dump_is_streamed_into_target", "seed": "test_dump_is_taken"}[method]
    failed = outcome.check(check)
    assert failed["outcome"] == "failed" and "take the dump again" in failed["message"]
    if method == "stream":  # the pod's pg_restore may or may not have created it by then
        assert "the exec stream ended before the pod reported" in failed["message"], failed
        assert "was dropped from the target" in failed["message"] or (
            "the target has no" in failed["message"]
        ), failed
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages["restore"]["detail"] == "stage 'dump' failed"
    kept = [*outcome.workdir.glob("*.sql*"), *outcome.workdir.glob("*.dump*")]
    assert not [p for p in kept if not p.name.endswith(".log")]
    with _connect_target(host_target) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (sbns.DATABASE,)
        ).fetchone() == (0,)
    assert _pod_sessions(cluster, deployed) == ""


def _kubectl_losing_the_stream(tmp_path: Path, restore_delay_s: int) -> Path:
    """A kubectl whose stream script's output ends here after its third line (pg_dump has
    imported the snapshot by then), exit code 0, while the exec itself goes on: its output is
    drained and its stdin stays open (so the pod's watchdog never hears that this side is
    gone), as when the connection to this host is lost but not the pod's. The pod's pg_restore
    is also made slow to start (the script is edited: its archive passes through `sleep; cat`
    first), so that the run's cleanup looks at the target before pg_restore has connected to
    it. A test double of a network fault: a real one cannot be caused on cue here."""
    slow = f'{{ {{ sleep {restore_delay_s}; cat; }} < "$dir/archive" | pg_restore \\1'
    edit = f's#{{ pg_restore \\(.*\\) < "$dir/archive"#{slow}#'
    return _kubectl_wrapper(
        tmp_path,
        "*sbm-progress*",
        "  for a do shift\n"
        '    case "$a" in *mkfifo*)\n'
        f"      a=$(printf '%s\\n' \"$a\" | sed '{edit}');;\n"
        "    esac\n"
        '    set -- "$@" "$a"\n'
        "  done\n"
        '  out=$(mktemp -u); mkfifo "$out"; exec 4<&0\n'
        '  "$real" "$@" <&4 > "$out" 2>/dev/null &\n'
        # (the drain's stdin given: a background job's is /dev/null unless given)
        '  exec 6< "$out"; rm -f "$out"; head -n 3 <&6; cat <&6 > /dev/null 2>&1 & exit 0;;\n',
    )


def test_lost_stream_whose_restore_connects_late_creates_nothing_after_the_run(
    cluster: kube.Kube,
    deployed: sbns.Install,
    host_target: pgserver.Server,
    tmp_path: Path,
) -> None:
    """The stream lost on this side only, the pod's pg_restore not yet connected to the target:
    the run stops what is left of the script in the pod before it looks at the target, so no
    database appears there after the run has said there is none (CI saw one appear when the
    pod's watchdog heard of the lost stream too late)."""
    _drop_target(host_target)
    delay_s = 4
    outcome = run_runbook(
        tmp_path,
        *_args(cluster, host_target, tmp_path),
        "--allow-active-connections",
        env=_env(_kubectl_losing_the_stream(tmp_path, delay_s)),
    )
    assert outcome.code == 1, outcome.output[-3000:]
    failed = outcome.check("test_dump_is_streamed_into_target")
    assert "the exec stream ended before the pod reported" in failed["message"], failed
    time.sleep(delay_s + 4)  # past the moment the slowed pg_restore would connect
    with _connect_target(host_target) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (sbns.DATABASE,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'stackblitz%'"
        ).fetchone() == (0,)
    assert _pod_sessions(cluster, deployed) == ""


def _pod_sessions(cluster: kube.Kube, install: sbns.Install) -> str:
    """The run's sessions still on the source (the held snapshot's, a pg_dump's), read in the
    pod, once they are gone or 20 s have passed."""
    pod = kube.PostgresPod(install.namespace, "postgres-0", "postgres", sbns.USER)
    query = (
        "SELECT application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
        "(application_name LIKE 'stackblitz-migrate%' OR application_name = 'pg_dump')"
    )
    argv = ["psql", "-XAtq", "-U", sbns.USER, "-d", sbns.DATABASE, "-c", query]
    deadline = time.monotonic() + 20
    while True:
        found = subprocess.run(
            kube.exec_argv(cluster, pod, argv, stdin=False),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


@pytest.mark.parametrize("once", [True, False], ids=["cut-once-retried", "cut-twice"])
def test_archive_stream_cut_short_is_retried_or_fails_in_one_line_keeping_the_target(
    cluster: kube.Kube,
    deployed: sbns.Install,
    host_target: pgserver.Server,
    tmp_path: Path,
    once: bool,
) -> None:
    """Stage 6's exec stream (the archive, after verification) ending early with exit code 0:
    the pod's byte count catches it and the artifact is dumped once more from the held
    snapshot; cut twice, the run fails in one line saying the verified target is kept, with no
    half-written archive, nothing left in the pod and no held session on the source."""
    _drop_target(host_target)
    outcome = run_runbook(
        tmp_path,
        *_args(cluster, host_target, tmp_path),
        "--allow-active-connections",
        "--no-key",
        env=_env(_kubectl_cutting(tmp_path, '*"| wc -c |"*', cut=SOME, once=once)),
    )
    doc = outcome.evidence
    assert doc["verified"] is True
    if once:
        assert outcome.code == 0, outcome.output[-3000:]
        _assert_artifact_dumped_after_verification(doc)
    else:
        assert outcome.code == 1, outcome.output[-3000:]
        failed = outcome.check("test_artifact_is_in_the_workdir_with_its_checksums")["message"]
        assert "\n" not in failed and "(tried 2 times)" in failed, failed
        assert "exec stream ended" in failed and "the target is verified and kept" in failed
        assert doc["dump"]["written"] is False
        assert not [*outcome.workdir.glob("*.dump*")]
        with _connect_target(host_target) as conn:  # verified: it stays
            assert conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = %s", (sbns.DATABASE,)
            ).fetchone() == (1,)
    assert _pod_sessions(cluster, deployed) == ""
    pod = kube.PostgresPod(deployed.namespace, "postgres-0", "postgres", sbns.USER)
    left = subprocess.run(
        kube.exec_argv(cluster, pod, ["ls", "-A", "/tmp"], stdin=False),
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout.strip() == ""
    _drop_target(host_target)  # verified, but the tests after this one expect no database


def test_key_stage_errors_are_clear(
    cluster: kube.Kube, deployed: sbns.Install, host_target: pgserver.Server, tmp_path: Path
) -> None:
    base = [
        *_args(cluster, host_target, tmp_path),
        "--preflight-only",
        "--allow-active-connections",
    ]
    # Without the KOTS plugin, preflight refuses before anything changes (a migration would
    # otherwise find out after the copy); with --no-key the plugin is not needed.
    no_plugin = run_runbook(tmp_path / "a", *base, env={"PATH": os.environ["PATH"]})
    refused = no_plugin.check("test_dump_and_restore_programs_are_installed")["message"]
    assert "the KOTS kubectl plugin (kubectl-kots) is not on PATH" in refused
    slug = run_runbook(tmp_path / "b", *base, "--kots-app", "nope", env=_env())
    assert "wrong app slug" in slug.check("test_encryption_key_is_found")["message"]
    ok = run_runbook(tmp_path / "c", *base, "--expect-key-fingerprint", "sha256:0000", env=_env())
    assert "generated a key of its own" in ok.check("test_encryption_key_is_found")["message"]
    subprocess.run(
        cluster.kubectl("delete", "deployment", "kotsadm", "-n", deployed.namespace, "--wait=true"),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        cluster.kubectl(
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app=kotsadm",
            "-n",
            deployed.namespace,
            "--timeout=60s",
        ),
        capture_output=True,
    )
    gone = run_runbook(tmp_path / "d", *base, env=_env())
    assert "no KOTS admin console" in gone.check("test_encryption_key_is_found")["message"]


def test_cluster_rehearsal_runs_the_whole_runbook(cluster: kube.Kube, tmp_path: Path) -> None:
    """`--rehearsal=cluster`: the same namespace the tests use, deployed by the runbook itself."""
    outcome = run_runbook(
        tmp_path,
        "--rehearsal=cluster",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--stop-app",
        "--method",
        "seed",  # the in-pod restore from a file; the other tests stream
    )
    assert outcome.code == 0, outcome.output[-3000:]
    doc = outcome.evidence
    assert doc["verified"] is True and doc["source"]["kind"] == "kubernetes"
    assert doc["dump"]["method"] == "seed" and doc["dump"]["path"].endswith(".sql.gz")
    assert doc["preflight"]["rehearsal"]["namespace"] == "stackblitz-rehearsal"
    assert doc["encryption_key"]["fingerprint"].startswith("sha256:")
    gone = subprocess.run(
        cluster.kubectl(
            "get", "namespace", "stackblitz-rehearsal", "-o", "jsonpath={.status.phase}"
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode != 0 or gone.stdout == "Terminating"  # cleaned up


def test_discovery_refuses_two_namespaces_and_none(cluster: kube.Kube) -> None:
    """Without --namespace it looks in default and stackblitz, and wants exactly one of them."""
    sbns.delete(cluster, "stackblitz")
    _wait_gone(cluster, "stackblitz")
    with pytest.raises(errors.UsageError, match=r"in namespace\(s\) default, stackblitz"):
        kube.find_postgres_pod(cluster, namespace=None, pod_name=None)
    subprocess.run(
        cluster.kubectl("create", "namespace", "stackblitz"), check=True, capture_output=True
    )
    try:
        for ns in ("default", "stackblitz"):
            subprocess.run(
                cluster.kubectl(
                    "run",
                    "postgres-decoy",
                    "-n",
                    ns,
                    f"--image={sbns.POSTGRES_IMAGE}",
                    "--image-pull-policy=Never",
                    "--command",
                    after=("--", "sleep", "infinity"),
                ),
                check=True,
                capture_output=True,
            )
        with pytest.raises(errors.UsageError, match="several namespaces \\(default, stackblitz\\)"):
            kube.find_postgres_pod(cluster, namespace=None, pod_name=None)
    finally:
        subprocess.run(
            cluster.kubectl("delete", "pod", "postgres-decoy", "-n", "default", "--wait=false"),
            capture_output=True,
            check=False,
        )
        sbns.delete(cluster, "stackblitz")
        _wait_gone(cluster, "stackblitz")


def test_key_stage_without_access_to_secrets_says_so(
    cluster: kube.Kube, deployed: sbns.Install, host_target: pgserver.Server, tmp_path: Path
) -> None:
    """An operator whose role may exec and port-forward but not read secrets (KOTS keeps its
    config in secrets): the stand-in answers as the real CLI does, on stdout."""
    ns = deployed.namespace
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {
            "apiGroups": [""],
            "resources": ["pods/exec", "pods/portforward"],
            "verbs": ["create", "get"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets"],
            "verbs": ["get", "list"],
        },
    ]
    docs = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "operator", "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "operator", "namespace": ns},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "operator", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "operator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}],
        },
    ]
    subprocess.run(
        cluster.kubectl("apply", "-f", "-"),
        input=yaml.safe_dump_all(docs),
        text=True,
        check=True,
        capture_output=True,
    )
    token = subprocess.run(
        cluster.kubectl("create", "token", "operator", "-n", ns),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    config = yaml.safe_load(Path(str(cluster.kubeconfig)).read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "operator"
    restricted = tmp_path / "operator.kubeconfig"
    restricted.write_text(yaml.safe_dump(config))
    restricted.chmod(0o600)
    args = _args(cluster, host_target, tmp_path)
    args[args.index("--kubeconfig") + 1] = str(restricted)
    outcome = run_runbook(
        tmp_path,
        *args,
        "--namespace",
        ns,
        "--preflight-only",
        "--allow-active-connections",
        env=_env(),
    )
    assert outcome.check("test_source_database_is_reachable")["outcome"] == "passed"
    message = outcome.check("test_encryption_key_is_found")["message"]
    assert "Unable to authenticate to the Admin Console" in message
    assert "no access to the admin console's secrets" in message


def _ca_and_server_cert(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for `ip`, as a managed server presents one."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sbm test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={ip}",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (directory / "san.ext").write_text(f"subjectAltName=IP:{ip}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


def test_restore_in_the_pod_verifies_the_target_certificate(
    test_cluster: clusters.TestCluster, deployed: sbns.Install, tmp_path: Path
) -> None:
    """--target-sslmode verify-full with a CA bundle on this host (as RDS wants): the bundle
    travels to the pod with the dump, and the target accepts pod clients over TLS only."""
    cluster, ip = test_cluster.kube, test_cluster.host_ip
    ca, cert, key = _ca_and_server_cert(tmp_path, ip)
    with pgserver.running_server(
        18, also_listen_on=ip, allow_cidr=test_cluster.client_cidr, tls=(cert, key)
    ) as server:
        target = pgserver.Server(ip, server.port, server.user, server.password, 18)
        outcome = run_runbook(
            tmp_path,
            *_args(cluster, target, tmp_path),
            "--target-sslmode",
            "verify-full",
            "--target-sslrootcert",
            str(ca),
            "--allow-active-connections",
            env=_env(),
        )
    assert outcome.code == 0, outcome.output[-3000:]
    assert outcome.evidence["verified"] is True
