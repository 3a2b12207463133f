"""Real PostgreSQL servers for the project's own tests: one 15 and one 18, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures import pgserver


@pytest.fixture(scope="session")
def pg15() -> Iterator[pgserver.Server]:
    with pgserver.running_server(15) as server:
        yield server


@pytest.fixture(scope="session")
def pg18() -> Iterator[pgserver.Server]:
    with pgserver.running_server(18) as server:
        yield server
