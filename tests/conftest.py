"""Real PostgreSQL servers for the project's own tests: one 15 and one 18, shared by the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fixtures import kind_cluster, pgserver
from tests import clusters


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-cluster",
        choices=clusters.CHOICES,
        default=os.environ.get("STACKBLITZ_MIGRATE_TEST_CLUSTER", "own"),
        help="the cluster of the Kubernetes-mode tests: own (tests/cluster, the default) or kind "
        "(scripts/setup --kind); also STACKBLITZ_MIGRATE_TEST_CLUSTER",
    )


@pytest.fixture(scope="session")
def pg15() -> Iterator[pgserver.Server]:
    with pgserver.running_server(15) as server:
        yield server


@pytest.fixture(scope="session")
def pg18() -> Iterator[pgserver.Server]:
    with pgserver.running_server(18) as server:
        yield server


@pytest.fixture(scope="session")
def test_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[clusters.TestCluster]:
    """The cluster --test-cluster names (tests/clusters.py), made for the session."""
    try:
        with (
            clusters.kind(tmp_path_factory.mktemp("kind"))
            if request.config.getoption("test_cluster") == "kind"
            else clusters.own()
        ) as made:
            yield made
    except (RuntimeError, kind_cluster.KindUnavailable) as e:
        pytest.fail(str(e))
