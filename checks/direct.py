"""The direct source: a database the operator's host reaches (e.g. through a port-forward)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from checks import dump as dumping
from checks import errors, pgtools, private, restore
from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint

# The seed's flags: --if-exists -c (drop before create), -C (create and connect), -x (no
# grants), -O (no ownership): a managed admin role is not a superuser.
PG_DUMP_FLAGS = ["--if-exists", "-xcCO"]


@dataclass
class DirectSource:
    endpoint: Endpoint
    pg_bindir: Path | None = None
    kind: str = "direct"
    _tools: pgtools.Toolset | None = field(default=None, repr=False)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "host": self.endpoint.host, "port": self.endpoint.port}

    def connect(self) -> psycopg.Connection:
        return self.endpoint.connect()

    def tools(self, *, source_major: int, target_major: int) -> pgtools.Toolset:
        if self._tools is None:
            self._tools = pgtools.for_migration(source_major, target_major, self.pg_bindir)
        return self._tools

    def tool_versions(self) -> dict[str, str]:
        if self._tools is None:
            return {}
        return {
            "pg_dump": self._tools.version,
            "psql": self._tools.version,
            "bindir": str(self._tools.bindir),
        }

    def secrets(self) -> set[str]:
        return {self.endpoint.password} if self.endpoint.password else set()

    def close(self) -> None:
        pass  # every connection is closed where it is opened

    def dump(self, dest: Path, *, target_major: int) -> DumpFile:
        with self.connect() as conn:
            source_major = conn.info.server_version // 10000
        tools = self.tools(source_major=source_major, target_major=target_major)
        argv = [tools.path("pg_dump"), *PG_DUMP_FLAGS, "-d", self.endpoint.conninfo()]
        errlog = dest.with_name(dest.name + ".pg_dump.log")
        with private.open_private(errlog) as err:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, env=self.endpoint.child_env()
            )
            assert proc.stdout
            try:
                written = dumping.write_dump(proc.stdout, dest)
            except errors.DumpFailed:
                proc.kill()
                proc.wait()
                raise errors.DumpFailed(
                    f"pg_dump's output is not a whole dump: {_tail(errlog)}"
                ) from None
            code = proc.wait()
        if code != 0:
            dest.unlink(missing_ok=True)
            raise errors.DumpFailed(f"pg_dump failed with exit code {code}: {_tail(errlog)}")
        errlog.unlink()
        return written

    def restore(self, dump: DumpFile, target: Endpoint, *, log: Path) -> None:
        if self._tools is None:
            raise errors.ToolMissing("restore before dump: the psql to use is not chosen yet")
        restore.restore(dump, target, self._tools, log)


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace").strip()
    return text.splitlines()[-1] if text else "no message"
