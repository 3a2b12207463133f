"""The Docker path: throwaway servers in containers of the locally built PostgreSQL image."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import docker
import psycopg
import pytest

from fixtures import containers, pgserver

_UNAVAILABLE = containers.docker_available()

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
]


@pytest.fixture(scope="module")
def server() -> Iterator[pgserver.Server]:
    with containers.running_container(15) as s:
        yield s


def test_container_server_accepts_password_login(server: pgserver.Server) -> None:
    assert (server.host, server.user, server.major, server.kind) == (
        "127.0.0.1",
        "postgres",
        15,
        "container",
    )
    with psycopg.connect(**server.connect_kwargs(), connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int, current_user, "
            "pg_encoding_to_char(encoding), datcollate "
            "FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    version_num, user, encoding, collate = row
    assert version_num // 10000 == 15
    assert (user, encoding, collate) == ("postgres", "UTF8", "C.UTF-8")


def test_wrong_password_is_refused(server: pgserver.Server) -> None:
    kwargs = {**server.connect_kwargs(), "password": server.password + "-wrong"}
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**kwargs, connect_timeout=10)


def test_other_major_is_refused() -> None:
    with pytest.raises(ValueError, match="PostgreSQL 18"), containers.running_container(18):
        pass


def test_entrypoint_creates_user_and_database_like_the_official_image() -> None:
    """POSTGRES_USER becomes the superuser (no postgres role) and owns POSTGRES_DB, which exists
    before the server listens on TCP: no connection sees 'database does not exist'."""
    password = secrets.token_urlsafe(18)
    client = docker.from_env()
    container = client.containers.run(
        containers.IMAGE,
        detach=True,
        environment={
            "POSTGRES_USER": "stackblitz",
            "POSTGRES_PASSWORD": password,
            "POSTGRES_DB": "stackblitz_production",
        },
        ports={"5432/tcp": ("127.0.0.1", None)},
        labels={"org.stackblitz-migrate.test": "test_containers"},
    )
    try:
        container.reload()
        port = int(container.ports["5432/tcp"][0]["HostPort"])
        kwargs = {
            "host": "127.0.0.1",
            "port": port,
            "user": "stackblitz",
            "password": password,
            "dbname": "stackblitz_production",
            "connect_timeout": 5,
        }
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(**kwargs)
                break
            except psycopg.OperationalError as e:
                assert "does not exist" not in str(e), "the server listened before the init"
                container.reload()
                if container.status != "running" or time.monotonic() > deadline:
                    logs = container.logs(tail=20).decode(errors="replace")
                    pytest.fail(f"container not ready ({container.status}): {e}\n{logs}")
                time.sleep(0.2)
        with conn:
            row = conn.execute(
                "SELECT current_user, current_database(), "
                "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                "(SELECT pg_get_userbyid(datdba) FROM pg_database "
                " WHERE datname = current_database()), "
                "(SELECT count(*) FROM pg_roles WHERE rolname = 'postgres')"
            ).fetchone()
        assert row == ("stackblitz", "stackblitz_production", True, "stackblitz", 0)
        # The password is in the container's environment, never on its command line.
        assert password not in " ".join([container.attrs["Path"], *container.attrs["Args"]])
    finally:
        container.remove(force=True, v=True)
        client.close()
