"""A PostgreSQL server to connect to: libpq parameters, with the password kept apart."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import conninfo

from checks import errors

# libpq keywords that can carry a secret; they never appear in a conninfo we show or pass on.
_SECRET_KEYS = frozenset({"password", "sslpassword"})
# TCP keepalives on every connection (psycopg's and the programs', which have no environment
# variable for them): a peer that vanished (a failed-over server, a dropped VPN) is noticed
# within about a minute and a half instead of the kernel's two hours. The operator's own values
# in a DSN win.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "6",
}


def read_password_file(path: Path) -> str:
    """The first line of a password file, which must be readable only by its owner."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as e:
        raise errors.UsageError(f"cannot read password file {path}: {e.strerror}") from e
    if mode & 0o077:
        raise errors.UsageError(
            f"password file {path} is readable by others: run `chmod 600 {path}`"
        )
    password = text.splitlines()[0] if text else ""
    if not password:
        raise errors.UsageError(f"password file {path} is empty: put the password on line 1")
    return password


@dataclass(frozen=True)
class Endpoint:
    """Where a server is and who logs in; no password means libpq finds it (PGPASSWORD, pgpass)."""

    role: str  # "source" or "target", for messages
    params: dict[str, str]
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_dsn(cls, role: str, dsn: str, password: str | None = None) -> Endpoint:
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as e:
            raise errors.UsageError(
                f"--{role}-dsn is not a valid libpq connection string: {str(e).splitlines()[0]}"
            ) from e
        if _SECRET_KEYS & params.keys():
            raise errors.UsageError(
                f"--{role}-dsn contains a password, which every user of this machine can read in "
                f"the process list: remove it and use ~/.pgpass or --{role}-password-file"
            )
        return cls(role, {k: str(v) for k, v in params.items()}, password)

    @property
    def dbname(self) -> str:
        return self.params.get("dbname", "")

    @property
    def host(self) -> str:
        return self.params.get("host") or os.environ.get("PGHOST") or "localhost"

    @property
    def port(self) -> int:
        return int(self.params.get("port") or os.environ.get("PGPORT") or 5432)

    def with_dbname(self, dbname: str) -> Endpoint:
        return replace(self, params={**self.params, "dbname": dbname})

    def describe(self) -> str:
        """host:port/dbname as user: safe for reports."""
        user = self.params.get("user") or os.environ.get("PGUSER") or "(default user)"
        return f"{self.host}:{self.port}/{self.dbname or '(default db)'} as {user}"

    def conninfo(self) -> str:
        """The libpq string without any secret: safe on a command line."""
        return conninfo.make_conninfo(**{**KEEPALIVES, **self.params})

    def child_env(self) -> dict[str, str]:
        """Environment for pg_dump and psql: the password travels here, never in argv."""
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        return env

    def connect(self, *, dbname: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        params: dict[str, str | int] = {
            **KEEPALIVES,
            **self.params,
            "connect_timeout": self.params.get("connect_timeout", "10"),
        }
        if dbname:
            params["dbname"] = dbname
        if self.password is not None:
            params["password"] = self.password
        try:
            return psycopg.connect(**params, autocommit=autocommit)
        except psycopg.OperationalError as e:
            where = self.describe() if not dbname else self.with_dbname(dbname).describe()
            raise errors.ConnectionFailed(
                f"cannot connect to the {self.role} {where}: {_first_line(e)}"
            ) from e


def _first_line(e: Exception) -> str:
    """libpq's reason without its 'connection to server at ... failed:' preamble."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first.rsplit(" failed: ", 1)[-1].replace("FATAL:", "").strip()
