"""The kind rehearsal on this machine: `pytest runbook/ --rehearsal=kind --stop-app` on a kind
cluster from the node image `scripts/setup --kind` builds (kind/build), and what it says where
kind cannot run (a missing part: tests/test_exit_status.py). Run these under the cluster lock
(`flock /tmp/sbm-cluster.lock`): kind uses the host's Docker, cgroups and iptables, as the
project's own test cluster does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures import kind_cluster
from tests.runbook_cli import run_runbook

pytestmark = pytest.mark.kind


def _kind_or_skip() -> None:
    try:
        kind_cluster.check()
    except kind_cluster.KindUnavailable as e:
        pytest.skip(f"kind cannot run here: {e}")


def _clusters() -> list[str]:
    done = subprocess.run(
        [str(kind_cluster.KIND_BIN), "get", "clusters"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_kind_rehearsal_is_verified(tmp_path: Path) -> None:
    _kind_or_skip()
    outcome = run_runbook(tmp_path, "--rehearsal=kind", "--stop-app")
    assert outcome.code == 0, outcome.output[-4000:]
    doc = outcome.evidence
    assert doc["verified"] is True
    assert {s["name"]: s["outcome"] for s in doc["stages"]} == dict.fromkeys(
        ("preflight", "dump", "restore", "verify", "encryption key", "artifact"), "passed"
    )
    assert "artifact" not in doc["preflight"]  # no room in the pod to decide on any more
    # dumped again after verification from the copy's snapshot, through kubectl exec (stage 6)
    assert doc["dump"]["written"] is True and "kubectl exec" in doc["dump"]["artifact"]
    assert doc["source"]["kind"] == "kubernetes"
    assert doc["source"]["namespace"] == "stackblitz-rehearsal"
    assert doc["preflight"]["rehearsal"]["cluster"] == "kind"
    assert doc["preflight"]["kind"]["node_image"] == kind_cluster.NODE_IMAGE
    assert doc["tools"]["pg_dump"].startswith("15.")  # the pod's own pg_dump
    (app,) = [w for w in doc["workloads"] if w["name"] == "stackblitz-app"]
    assert app["stopped"] is True
    assert (outcome.reports / "kind-stackblitz-migrate.log").is_file()
    assert "stackblitz-migrate" not in _clusters()  # deleted at the end
    print(f"kind create: {doc['preflight']['kind']['create_seconds']} s")


def test_kind_create_failure_names_the_step_and_its_message(tmp_path: Path) -> None:
    """A real failure of `kind create`: the nodes started with Docker's default runtime, which
    cannot give a --privileged container a capability this host's root lacks. Where root holds
    them all there is no such failure to provoke, and the test says so."""
    _kind_or_skip()
    if kind_cluster.docker_runtime() == "":
        pytest.skip("root holds every capability here: kind's nodes start with Docker's runtime")
    name = "sbm-kind-failure"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kind_cluster, "docker_runtime", lambda: "")
        with (
            pytest.raises(kind_cluster.KindUnavailable) as caught,
            kind_cluster.running(name, log_dir=tmp_path),
        ):
            pass
    message = str(caught.value)
    assert message.startswith("step 'Preparing nodes': ERROR: failed to create cluster"), message
    assert message.endswith(f"(log: {tmp_path / f'kind-{name}.log'})"), message
    assert "it said: docker: Error response from daemon" in message
    assert "unable to apply caps: operation not permitted" in message
    assert name not in _clusters()
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=io.x-k8s.kind.cluster={name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert left == ""
