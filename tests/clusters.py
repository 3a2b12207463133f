"""The cluster the Kubernetes-mode tests run on, picked by `--test-cluster` (or the environment
variable STACKBLITZ_MIGRATE_TEST_CLUSTER): `own` is tests/cluster (started here, stopped at the
end), `kind` a kind cluster from the node image `scripts/setup --kind` builds."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from checks import kube
from fixtures import kind_cluster
from fixtures import stackblitz_namespace as sbns

CHOICES = ("own", "kind")
OWN = Path(__file__).resolve().parent / "cluster"
OWN_STATE = Path("/var/lib/stackblitz-migrate-cluster")
KIND_NAME = "stackblitz-migrate-tests"


@dataclass(frozen=True)
class TestCluster:
    __test__ = False  # not a test class, whatever its name

    name: str  # "own" or "kind"
    kube: kube.Kube
    host_ip: str  # where pods reach this host: a target for pods listens there
    client_cidr: str  # the addresses pods' connections come from, as this host sees them
    audit_log: Path | None  # the API server's audit log (exec argv land there); kind keeps none


@contextlib.contextmanager
def own() -> Iterator[TestCluster]:
    """tests/cluster/up (a no-op when it runs), and down at the end: the next run starts fresh."""
    done = subprocess.run([str(OWN / "up")], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tests/cluster/up failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    try:
        yield TestCluster(
            "own",
            kube.Kube(OWN_STATE / "admin.kubeconfig"),
            os.environ.get("HOST_IP", "10.244.0.1"),  # tests/cluster/env.sh
            os.environ.get("POD_CIDR", "10.244.0.0/24"),
            OWN_STATE / "logs" / "audit.log",
        )
    finally:
        subprocess.run([str(OWN / "down")], capture_output=True, check=False)


@contextlib.contextmanager
def kind(log_dir: Path) -> Iterator[TestCluster]:
    """A kind cluster with the PostgreSQL image loaded. Pods' connections to this host arrive
    masqueraded from the node's address on kind's network, and this host's own (the runbook's)
    to the gateway from its primary address: the target lets any address try its random
    password, as the kind rehearsal's does."""
    with kind_cluster.running(KIND_NAME, images=(sbns.POSTGRES_IMAGE,), log_dir=log_dir) as c:
        yield TestCluster("kind", c.kube, kind_cluster.gateway(), "0.0.0.0/0", None)
