"""Kubernetes mode on installs laid out unlike the project's own scene, on the test cluster: a
finished Job pod named *postgres*, a postgres-exporter sidecar listed first, the environment from
envFrom, `$(VAR)` and `_FILE`, more KOTS versions than one page holds, a custom namespace; and
what discovery must refuse. Each scene is migrated end to end and verified after its discovery
is checked; one more scene holds all of them at once.

The KOTS admin console cannot run here: `kubectl kots` is the stand-in in fixtures/bin, which
pages `get versions` as the real CLI does.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from checks import errors, kots, kots_cli, kube
from checks.kubernetes import KubernetesSource
from fixtures import pgserver
from fixtures import stackblitz_namespace as sbns
from fixtures.kots_sample import kots_config_values
from tests import clusters, test_kubernetes
from tests.runbook_cli import Outcome, run_runbook
from tests.test_kubernetes import KEY, OLD_KEY, _args, _drop_target, _env, _wait_gone

# The test cluster and the target on this host, as tests/test_kubernetes.py provides them
# (pytest finds fixtures by name in the module; `up` is a no-op when the cluster runs).
cluster = test_kubernetes.cluster
host_target = test_kubernetes.host_target

pytestmark = pytest.mark.cluster
PAUSE_IMAGE = "localhost/stackblitz-migrate/pause:1"  # tests/cluster/images: no shell in it


def _versions(newer: int, *, deployed: str = "deployed") -> list[dict[str, object]]:
    """Newest first, as the CLI lists them: `newer` downloaded versions nobody deployed, then
    sequence 4 (the one that runs, whose row says `deployed`) and 3 before it."""
    rows: list[dict[str, object]] = [
        {
            "versionLabel": f"1.3.{i}",
            "sequence": 5 + i,
            "status": "pending",
            "deployedAt": None,
            "createdOn": "2026-11-25T10:00:00Z",
            "source": "Upstream Update",
        }
        for i in reversed(range(newer))
    ]
    return [
        *rows,
        {"versionLabel": "1.2.0", "sequence": 4, "status": deployed, "deployedAt": "2026-11-20"},
        {"versionLabel": "1.1.0", "sequence": 3, "status": "superseded", "deployedAt": "2026-10"},
    ]


def _install(namespace: str, **kw: object) -> sbns.Install:
    kw.setdefault("kots_versions", _versions(1))
    return sbns.Install(
        namespace,
        secrets.token_urlsafe(12),
        kots_configs={3: kots_config_values(OLD_KEY), 4: kots_config_values(KEY)},
        **kw,  # type: ignore[arg-type]
    )


@contextmanager
def _scene(cluster: kube.Kube, install: sbns.Install, *, app: bool = False) -> Iterator[None]:
    sbns.delete(cluster, install.namespace)
    _wait_gone(cluster, install.namespace)
    try:
        sbns.deploy(cluster, install, app=app)
        yield
    finally:
        sbns.delete(cluster, install.namespace)


@pytest.fixture
def kots_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubectl kots` for calls made from the test process itself."""
    monkeypatch.setenv("PATH", _env()["PATH"])


def _kubectl(cluster: kube.Kube, *args: str, after: tuple[str, ...] = ()) -> str:
    return subprocess.run(
        cluster.kubectl(*args, after=after), check=True, capture_output=True, text=True
    ).stdout


def _migrates(
    cluster: kube.Kube,
    host_target: pgserver.Server,
    tmp_path: Path,
    install: sbns.Install,
    *extra: str,
    search: bool = False,
) -> Outcome:
    """Seed the scene's database and migrate it in Kubernetes mode, its namespace named (or,
    with `search`, found); the outcome of a verified run."""
    sbns.seed(cluster, install)
    _drop_target(host_target)
    outcome = run_runbook(
        tmp_path / "migration",
        *_args(cluster, host_target, tmp_path),
        *([] if search else ["--namespace", install.namespace]),
        *extra,
        env=_env(),
    )
    assert outcome.code == 0, outcome.output[-4000:]
    assert outcome.evidence["verified"] is True
    assert install.password not in (outcome.reports / "evidence.json").read_text()
    return outcome


def test_finished_job_pod_is_passed_over_and_versions_are_paged(
    cluster: kube.Kube, host_target: pgserver.Server, tmp_path: Path, kots_on_path: None
) -> None:
    ns = "sbm-job"
    install = _install(ns, finished_job=True, kots_versions=_versions(45))
    with _scene(cluster, install):
        pod = kube.find_postgres_pod(cluster, namespace=ns, pod_name=None)
        assert (pod.name, pod.container) == ("postgres-0", "postgres")
        passed = {p["pod"]: p["why"] for p in pod.found["passed_over"]}  # type: ignore[attr-defined]
        (job_pod,) = [p for p in passed if p.startswith(f"{ns}/postgres-schema-migrate-")]
        assert passed[job_pod] == "finished (Succeeded)"
        assert passed[f"{ns}/kotsadm-postgres-0"] == "KOTS's own (name holds 'kots')"
        with pytest.raises(errors.Refused, match=r"is finished \(Succeeded\): it is not"):
            kube.find_postgres_pod(cluster, namespace=ns, pod_name=job_pod.split("/")[1])

        # What the install saw: the CLI's first page (20 rows) says nothing is deployed.
        first = _kubectl(cluster, "kots", "get", "versions", "stackblitz", "-n", ns, "-o", "json")
        assert first.count('"sequence"') == 20 and '"deployed"' not in first
        paged = kots_cli.versions(cluster, ns, "stackblitz", page_size=20)
        assert paged.deployed and paged.deployed.sequence == 4
        assert (paged.rows, paged.pages) == (47, 3)
        assert kots_cli.versions(cluster, ns, "stackblitz").pages == 1  # 100 rows a page

        doc = _migrates(cluster, host_target, tmp_path, install).evidence
        assert doc["source"]["pod"] == "postgres-0"
        assert doc["kots"]["deployed_sequence"] == 4


def test_exporter_sidecar_listed_first_is_not_the_database(
    cluster: kube.Kube, host_target: pgserver.Server, tmp_path: Path
) -> None:
    ns = "sbm-sidecar"
    install = _install(ns, exporter_sidecar=True)
    with _scene(cluster, install):
        pod = kube.find_postgres_pod(cluster, namespace=ns, pod_name=None)
        assert pod.container == "postgres"
        assert pod.found["containers"] == ["postgres-exporter", "postgres"]
        assert pod.found["container_chosen_by"] == (
            "the only container that declares port 5432; environment POSTGRES_DB, "
            "POSTGRES_PASSWORD, POSTGRES_USER; named postgres"
        )
        assert str(pod.found["pg_dump"]).startswith("pg_dump (PostgreSQL) 15.")
        with pytest.raises(errors.UsageError, match=r"\(it has postgres-exporter, postgres\)"):
            kube.find_postgres_pod(cluster, namespace=ns, pod_name=None, container="exporter")
        named = kube.find_postgres_pod(cluster, namespace=ns, pod_name=None, container="postgres")
        assert named.found["container_chosen_by"] == "--source-container"

        doc = _migrates(cluster, host_target, tmp_path, install).evidence
        assert doc["source"]["container"] == "postgres"


def test_environment_as_the_kubelet_builds_it_and_a_versions_list_without_deployed_row(
    cluster: kube.Kube, host_target: pgserver.Server, tmp_path: Path
) -> None:
    """The database container is `db`, declares no port, and gets POSTGRES_USER and POSTGRES_DB
    only through envFrom with a prefix, PGDATA through $(DATA_ROOT), the password only through
    POSTGRES_PASSWORD_FILE. The KOTS rows say nothing is deployed (the deploy failed), but
    `get config --current` answers: a warning, not a failed key stage."""
    ns = "sbm-env"
    install = _install(ns, kubelet_env=True, kots_versions=_versions(3, deployed="failed"))
    install.kots_current = 4
    _drop_target(host_target)
    with _scene(cluster, install):
        pod = kube.find_postgres_pod(cluster, namespace=ns, pod_name=None)
        assert (pod.container, pod.user) == ("db", sbns.USER)
        assert pod.found["user_from"] == "envFrom configMap postgres-env (prefix POSTGRES_)"
        assert pod.found["container_chosen_by"] == (
            "the only container that declares environment PGDATA, POSTGRES_DB, "
            "POSTGRES_PASSWORD_FILE, POSTGRES_USER"
        )
        source = KubernetesSource(cluster, pod, sbns.DATABASE)
        try:
            with source.connect() as conn:  # the password from POSTGRES_PASSWORD_FILE
                row = conn.execute("SELECT current_user, current_setting('data_directory')")
                assert row.fetchone() == (sbns.USER, f"{sbns.DATA_ROOT}/pgdata")
            assert source.secrets() == {install.password}
        finally:
            source.close()

        doc = _migrates(
            cluster, host_target, tmp_path, install, "--source-container", "db"
        ).evidence
        warning = "no row of `kubectl kots get versions stackblitz` says deployed"
        assert warning in doc["kots"]["warning"]
        assert "deployed_sequence" not in doc["kots"]
        expected = kots.encryption_key(kots_config_values(KEY)).fingerprint
        assert doc["encryption_key"]["fingerprint"] == expected  # sequence 4's, not 3's
        assert doc["source"]["discovery"]["container_chosen_by"] == "--source-container"


def test_two_postgres_looking_containers_are_refused_until_annotated(cluster: kube.Kube) -> None:
    ns = "sbm-two-containers"
    with _scene(cluster, _install(ns, second_postgres_container=True)):
        with pytest.raises(errors.UsageError, match="several of its containers") as info:
            kube.find_postgres_pod(cluster, namespace=ns, pod_name=None)
        assert "postgresql (environment PGDATA, POSTGRES_USER; named postgresql)" in str(info.value)
        _kubectl(
            cluster,
            "annotate",
            "-n",
            ns,
            "pod/postgres-0",
            "kubectl.kubernetes.io/default-container=postgres",
        )
        pod = kube.find_postgres_pod(cluster, namespace=ns, pod_name=None)
        assert pod.container == "postgres"
        assert pod.found["container_chosen_by"] == (
            "the pod's kubectl.kubernetes.io/default-container annotation"
        )


def _sleeping_pods(cluster: kube.Kube, ns: str, *names: str) -> None:
    """Pods that only have to exist: discovery reads names and phases before anything else."""
    _kubectl(cluster, "create", "namespace", ns)
    for name in names:
        _kubectl(
            cluster,
            "run",
            name,
            "-n",
            ns,
            f"--image={sbns.POSTGRES_IMAGE}",
            "--image-pull-policy=Never",
            "--command",
            after=("--", "sleep", "infinity"),
        )


def test_ambiguous_pods_and_namespaces_are_refused_with_their_names(cluster: kube.Kube) -> None:
    spaces = ("sbm-search-a", "sbm-search-b")
    for ns in (*spaces, "stackblitz"):
        sbns.delete(cluster, ns)
        _wait_gone(cluster, ns)
    try:
        _sleeping_pods(cluster, spaces[0], "kotsadm", "postgres-a", "postgres-b")
        _sleeping_pods(cluster, spaces[1], "kotsadm", "postgres-c")
        with pytest.raises(errors.UsageError) as two_pods:
            kube.find_postgres_pod(cluster, namespace=spaces[0], pod_name=None)
        assert str(two_pods.value) == (
            "several postgres pods in namespace sbm-search-a (postgres-a, postgres-b): "
            "pass --source-pod"
        )
        with pytest.raises(errors.UsageError) as two_installs:
            kube.find_postgres_pod(cluster, namespace=None, pod_name=None)
        assert str(two_installs.value) == (
            "StackBlitz-like installs in several namespaces (sbm-search-a, sbm-search-b): each "
            "holds a KOTS admin console and a postgres pod: pass --namespace"
        )
        # A container with no shell at all (a distroless exporter: here the cluster's static
        # pause image), named with --source-pod: the probe says so instead of a bare exec error.
        _kubectl(
            cluster,
            "run",
            "postgres-metrics",
            "-n",
            spaces[1],
            f"--image={PAUSE_IMAGE}",
            "--image-pull-policy=Never",
        )
        _kubectl(cluster, "wait", "-n", spaces[1], "pod/postgres-metrics", "--for=condition=Ready")
        with pytest.raises(errors.UsageError) as no_shell:
            kube.find_postgres_pod(cluster, namespace=spaces[1], pod_name="postgres-metrics")
        assert str(no_shell.value).startswith(
            "kubectl exec into container postgres-metrics of pod sbm-search-b/postgres-metrics "
            "failed ("
        )
        assert str(no_shell.value).endswith(
            "if it is not the database's container, pass --source-container NAME (the pod has "
            "postgres-metrics)"
        )
    finally:
        for ns in spaces:
            sbns.delete(cluster, ns)


def test_unusual_install_migrates_end_to_end(
    test_cluster: clusters.TestCluster,
    cluster: kube.Kube,
    host_target: pgserver.Server,
    tmp_path: Path,
) -> None:
    """Every variation at once, in a namespace found by search: a sidecar listed first, a
    finished Job pod, the kubelet-built environment, the deployed version past the CLI's first
    page; the app stopped, the database migrated and verified, the key of the deployed one."""
    ns = "sbm-custom-install"
    install = _install(
        ns,
        exporter_sidecar=True,
        finished_job=True,
        kubelet_env=True,
        kots_versions=_versions(25),
    )
    for seed_ns in kube.STACKBLITZ_NAMESPACES[1:]:  # `default` holds no postgres pod here
        sbns.delete(cluster, seed_ns)
        _wait_gone(cluster, seed_ns)
    with _scene(cluster, install, app=True):
        key_out = tmp_path / "key"
        outcome = _migrates(
            cluster,
            host_target,
            tmp_path,
            install,
            "--stop-app",
            "--key-out",
            str(key_out),
            search=True,
        )
        doc = outcome.evidence
        found = doc["source"]["discovery"]
        assert (doc["source"]["namespace"], doc["source"]["container"]) == (ns, "db")
        assert found["namespace_found_by"].startswith("searched ")
        assert found["namespace_found_by"].endswith(
            "the only one with a KOTS admin console and a postgres pod"
        )
        whys = {p["pod"].split("/")[1]: p["why"] for p in found["passed_over"]}
        assert "finished (Succeeded)" in whys.values() and "kotsadm-postgres-0" in whys
        assert found["containers"] == ["postgres-exporter", "db"]
        assert found["user_from"] == "envFrom configMap postgres-env (prefix POSTGRES_)"
        assert doc["kots"]["deployed_sequence"] == 4
        assert doc["kots"]["versions_listed"] == "27 in 1 page(s)"
        assert key_out.read_text() == KEY + "\n"
        (app,) = [w for w in doc["workloads"] if w["name"] == "stackblitz-app"]
        assert app["stopped"] is True
        assert "Discovery" in (outcome.reports / "report.html").read_text()
        # the audit log (own cluster), the reports, the workdir and the pod's `db` container
        test_kubernetes._assert_no_secret_left(
            test_cluster, install, host_target, outcome, container="db"
        )
