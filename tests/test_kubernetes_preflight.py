"""Kubernetes mode on the test cluster: the scratch restore runs from the pod, and what the
target refuses is refused in preflight, with --stop-app, before StackBlitz is stopped.

The target user may only create databases (as a managed service's is no superuser).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from checks import kube, scratch
from fixtures import pgserver
from fixtures import stackblitz_namespace as sbns
from tests import test_kubernetes as clustered
from tests.runbook_cli import Outcome, run_runbook
from tests.test_kubernetes import _args, _connect_target, _env

# The cluster tests' fixtures (cluster, namespace, host target), shared with them.
cluster, deployed, host_target = clustered.cluster, clustered.deployed, clustered.host_target

pytestmark = pytest.mark.cluster

LIMITED = "sbm_k8s_createdb_only"
LIMITED_PW = "k8s-createdb-only-Pw1"


@pytest.fixture
def limited_target(host_target: pgserver.Server) -> Iterator[pgserver.Server]:
    with _connect_target(host_target) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(LIMITED)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(LIMITED), sql.Literal(LIMITED_PW)
            )
        )
    yield pgserver.Server(host_target.host, host_target.port, LIMITED, LIMITED_PW, 18)
    with _connect_target(host_target) as conn:
        owned = conn.execute(
            "SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = %s", (LIMITED,)
        ).fetchall()
        for (name,) in owned:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(LIMITED)))


def _in_pod(cluster: kube.Kube, install: sbns.Install, statement: str) -> None:
    """SQL as the pod's own superuser, in the database being migrated."""
    pod = kube.PostgresPod(install.namespace, "postgres-0", "postgres", sbns.USER)
    command = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", sbns.USER, "-d", sbns.DATABASE]
    subprocess.run(
        kube.exec_argv(cluster, pod, [*command, "-c", statement], stdin=False),
        check=True,
        capture_output=True,
    )


def _app_replicas(cluster: kube.Kube, install: sbns.Install) -> str:
    return subprocess.run(
        cluster.kubectl(
            "get",
            "deployment",
            "stackblitz-app",
            "-n",
            install.namespace,
            "-o",
            "jsonpath={.spec.replicas}",
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _databases(target: pgserver.Server) -> list[str]:
    with _connect_target(target) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


def _refused_before_the_outage(
    outcome: Outcome,
    cluster: kube.Kube,
    install: sbns.Install,
    check: str,
) -> str:
    """The run failed in preflight at `check`; StackBlitz still runs. The check's message."""
    assert outcome.code == 1, outcome.output[-3000:]
    failed = outcome.check(check)
    assert failed["outcome"] == "failed", failed
    stages = {s["name"]: s for s in outcome.evidence["stages"]}
    assert stages["preflight"]["outcome"] == "failed"
    assert stages["dump"]["outcome"] == "skipped"
    assert outcome.check("test_stackblitz_is_stopped")["outcome"] == "skipped"
    assert not any(w.get("stopped") for w in outcome.evidence["workloads"] or [])
    assert _app_replicas(cluster, install) == "1"
    assert "to start it again" not in outcome.output
    return str(failed["message"])


def test_refusals_come_in_preflight_from_the_pod_and_stackblitz_keeps_running(
    cluster: kube.Kube,
    deployed: sbns.Install,
    host_target: pgserver.Server,
    limited_target: pgserver.Server,
    tmp_path: Path,
) -> None:
    before = _databases(host_target)
    args = [*_args(cluster, limited_target, tmp_path), "--stop-app"]

    # The sample database (citext, pgcrypto: trusted) restores from the pod as this user.
    passed = run_runbook(tmp_path / "ok", *args, "--preflight-only", env=_env())
    assert passed.code == 0, passed.output[-3000:]
    done = passed.evidence["preflight"]["scratch_restore"]
    assert done["objects"] > 100 and done["dropped"] is True, done
    audit = Path("/var/lib/stackblitz-migrate-cluster/logs/audit.log").read_text(errors="replace")
    assert "--section%3Dpre-data" in audit or "--section=pre-data" in audit  # ran in the pod
    assert LIMITED_PW not in audit and LIMITED_PW not in passed.output
    print(f"scratch restore from the pod: {done['seconds']} s, {done['objects']} objects")

    # An untrusted extension: the catalog check names it; nothing else runs on the target.
    _in_pod(cluster, deployed, "CREATE EXTENSION pgstattuple")
    untrusted = run_runbook(tmp_path / "untrusted", *args, env=_env())
    message = _refused_before_the_outage(
        untrusted, cluster, deployed, "test_target_user_may_create_source_extensions"
    )
    assert "pgstattuple (not trusted: only a superuser may create it)" in message
    assert untrusted.check("test_schema_restores_on_target")["outcome"] == "skipped"

    # An ICU collation (the pod's PostgreSQL has ICU, the target's build has not): only the
    # scratch restore, run from the pod, finds out.
    _in_pod(
        cluster,
        deployed,
        "DROP EXTENSION pgstattuple; CREATE COLLATION german (provider = icu, locale = 'de-DE'); "
        "CREATE TABLE names (n text COLLATE german)",
    )
    icu = run_runbook(tmp_path / "icu", *args, env=_env())
    message = _refused_before_the_outage(icu, cluster, deployed, "test_schema_restores_on_target")
    assert f"does not restore on the target as {LIMITED}: ICU is not supported" in message
    assert "CREATE COLLATION public.german" in message and message.endswith("was dropped")
    assert _databases(host_target) == before
    assert not [d for d in _databases(host_target) if d.startswith(scratch.PREFIX)]
