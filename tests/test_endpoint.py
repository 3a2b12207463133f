"""Connection settings keep the password out of argv, reports and reprs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from psycopg import conninfo

from checks import errors
from checks.endpoint import Endpoint, read_password_file
from fixtures import pgserver


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:hunter22@db.example/x",
        "host=db.example user=u password=hunter22",
    ],
)
def test_dsn_with_a_password_is_refused(dsn: str) -> None:
    with pytest.raises(errors.UsageError, match="password-file") as info:
        Endpoint.from_dsn("source", dsn)
    assert "hunter22" not in str(info.value)


def test_password_never_in_conninfo_describe_or_repr() -> None:
    ep = Endpoint.from_dsn("source", "host=h port=5433 user=u dbname=d", password="hunter22")
    assert "hunter22" not in ep.conninfo() + ep.describe() + repr(ep)
    assert ep.child_env()["PGPASSWORD"] == "hunter22"


def test_password_file_must_be_private(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("hunter22\n")
    f.chmod(0o644)
    with pytest.raises(errors.UsageError, match="chmod 600"):
        read_password_file(f)
    f.chmod(0o600)
    assert read_password_file(f) == "hunter22"


def test_wrong_password_is_one_clear_line(pg15: pgserver.Server) -> None:
    ep = Endpoint(
        "target", {"host": pg15.host, "port": str(pg15.port), "user": pg15.user}, "not-the-password"
    )
    with pytest.raises(errors.ConnectionFailed) as info:
        ep.connect(dbname="postgres")
    message = str(info.value)
    assert "\n" not in message
    assert "password authentication failed" in message
    assert "not-the-password" not in message


def test_unreachable_server_is_one_clear_line() -> None:
    ep = Endpoint("target", {"host": "127.0.0.1", "port": str(pgserver.free_port())})
    with pytest.raises(errors.ConnectionFailed, match="Connection refused") as info:
        ep.connect(dbname="postgres")
    assert "\n" not in str(info.value)


def test_connections_use_tcp_keepalives_unless_the_dsn_says_otherwise() -> None:
    """The programs' conninfo and psycopg's connections notice a vanished peer (issue 8)."""
    ep = Endpoint.from_dsn("source", "host=db.example port=5432 keepalives_idle=5")
    params = conninfo.conninfo_to_dict(ep.conninfo())
    assert params["keepalives"] == "1" and params["keepalives_count"] == "6"
    assert params["keepalives_idle"] == "5"  # the operator's value wins


def test_psycopg_connections_turn_keepalives_on(pg18: pgserver.Server) -> None:
    ep = Endpoint("target", {"host": pg18.host, "port": str(pg18.port), "user": pg18.user})
    ep = Endpoint("target", ep.params, pg18.password)
    with ep.connect(dbname="postgres") as conn:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        finally:
            sock.close()
