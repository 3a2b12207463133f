"""Real PostgreSQL servers for the project's own tests: one 15 and one 18, shared by the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fixtures import pgserver
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
