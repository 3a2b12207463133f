"""The Kubernetes source: StackBlitz's embedded PostgreSQL pod, dumped and restored in-cluster.

The dump runs the pod's own pg_dump through `kubectl exec -i` (never a TTY) and hashes the SQL
inside the pod as it streams out; the local copy must hash the same, because a broken exec
stream can end early with exit code 0. The restore runs the pod's own psql, where the managed
server is reachable: the password travels on stdin, never in an argv, and the dump is hashed in
the pod before psql may read it.
"""

from __future__ import annotations

import base64
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from checks import dump as dumping
from checks import errors, kube, private, restore
from checks.dumpfile import CHUNK, DumpFile
from checks.endpoint import Endpoint
from checks.restore import MAINTENANCE_DB

# $1 is the database. The SQL goes to stdout (fd 3) and through sha256sum; pg_dump's status and
# the hash go to stderr, marked, so that they are told apart from pg_dump's own messages.
DUMP_SCRIPT = (
    '{ { pg_dump --if-exists -xcCO -U "$POSTGRES_USER" -d "$1"; '
    'echo "sbm-pg-dump-exit:$?" >&2; } | tee /dev/fd/3 | sha256sum | '
    'sed "s/^/sbm-sha256:/" >&2; } 3>&1'
)

# stdin: the password line, the dump's SHA-256 line, the target's CA bundle base64-encoded on one
# line (empty when none), then the gzip file. $1 is the target's conninfo (no secret in it). The
# files live in a private temporary directory removed on exit.
RESTORE_SCRIPT = """set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
IFS= read -r PGPASSWORD
export PGPASSWORD
IFS= read -r expected
IFS= read -r ca
if [ -n "$ca" ]; then
  printf %s "$ca" | base64 -d > "$dir/root.crt"
  export PGSSLROOTCERT="$dir/root.crt"
fi
cat > "$dir/dump.sql.gz"
actual=$(sha256sum "$dir/dump.sql.gz" | cut -d ' ' -f 1)
if [ "$actual" != "$expected" ]; then
  echo "sbm: the dump reached the pod incomplete (sha256 $actual, sent $expected)" >&2
  exit 86
fi
gunzip -c "$dir/dump.sql.gz" | psql -X -q -v ON_ERROR_STOP=1 -d "$1"
"""

_EXIT = re.compile(rb"^sbm-pg-dump-exit:(\d+)$", re.MULTILINE)
_SHA = re.compile(rb"^sbm-sha256:([0-9a-f]{64})", re.MULTILINE)
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\S+)")


@dataclass
class KubernetesSource:
    kube: kube.Kube
    pod: kube.PostgresPod
    database: str
    kind: str = "kubernetes"
    _forward: kube.PortForward | None = field(default=None, repr=False)
    _password: str | None = field(default=None, repr=False)
    _version: str | None = None

    def describe(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "namespace": self.pod.namespace,
            "pod": self.pod.name,
            "container": self.pod.container,
            "context": self.kube.context,
            "host": "port-forward",
            "port": self._forward.port if self._forward else None,
        }

    def secrets(self) -> set[str]:
        return {self._password} if self._password else set()

    def _run(self, script: str, *args: str, stdin: bytes | None = None) -> bytes:
        argv = kube.exec_argv(
            self.kube, self.pod, ["sh", "-c", script, "sh", *args], stdin=stdin is not None
        )
        done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
        if done.returncode != 0:
            raise errors.ConnectionFailed(
                f"kubectl exec in {self.pod.namespace}/{self.pod.name} failed: "
                f"{done.stderr.decode(errors='replace').strip()[-300:]}"
            )
        return done.stdout

    def endpoint(self) -> Endpoint:
        """The source through a port-forward, logging in with the pod's own credentials."""
        if self._forward is None:
            # The value is printed by the shell, so it is in no argv.
            self._password = self._run('printf %s "${POSTGRES_PASSWORD:-}"').decode() or None
            self._forward = kube.PortForward(self.kube, self.pod)
        params = {
            "host": "127.0.0.1",
            "port": str(self._forward.port),
            "user": self.pod.user,
            "dbname": self.database,
        }
        return Endpoint("source", params, self._password)

    def connect(self) -> psycopg.Connection:
        return self.endpoint().connect()

    def tool_versions(self) -> dict[str, str]:
        if self._version is None:
            out = self._run("pg_dump --version").decode(errors="replace")
            match = _VERSION.search(out)
            self._version = match[1] if match else out.strip()
        return {
            "pg_dump": self._version,
            "psql": self._version,
            "where": f"pod {self.pod.namespace}/{self.pod.name}",
        }

    def dump(self, dest: Path, *, target_major: int) -> DumpFile:
        argv = kube.exec_argv(
            self.kube, self.pod, ["sh", "-c", DUMP_SCRIPT, "sh", self.database], stdin=False
        )
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout and proc.stderr
        stderr: list[bytes] = []
        reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
        reader.start()
        try:
            written = dumping.write_dump(proc.stdout, dest)
        except errors.DumpFailed as e:
            proc.kill()
            proc.wait()
            reader.join(5)
            raise errors.DumpFailed(
                f"{e} (kubectl exec: {b''.join(stderr).decode(errors='replace').strip()[-300:]})"
            ) from None
        code = proc.wait()
        reader.join(30)
        err = b"".join(stderr)
        exit_match, sha_match = _EXIT.search(err), _SHA.search(err)
        problem = None
        if code != 0:
            problem = f"kubectl exec exited with {code}"
        elif not exit_match or exit_match[1] != b"0":
            problem = f"pg_dump in the pod failed ({err.decode(errors='replace').strip()[-300:]})"
        elif not sha_match:
            problem = "the pod did not report the dump's checksum"
        elif sha_match[1].decode() != written.sql_sha256:
            problem = (
                f"the dump changed in transit: SHA-256 {sha_match[1].decode()} in the pod, "
                f"{written.sql_sha256} here (the exec stream ended early)"
            )
        if problem:
            dest.unlink(missing_ok=True)
            raise errors.DumpFailed(f"{problem}: take the dump again")
        return written

    def restore(self, dump: DumpFile, target: Endpoint, *, log: Path) -> None:
        if target.password is None:
            raise errors.UsageError(
                "in Kubernetes mode the restore runs in the pod: give the target password with "
                "--target-password-file (libpq's files on this host do not reach the pod)"
            )
        # A CA bundle named on this host (e.g. RDS's, for verify-full) travels with the dump.
        params = {k: v for k, v in target.params.items() if k != "sslrootcert"}
        ca = b""
        if "sslrootcert" in target.params:
            ca = base64.b64encode(Path(target.params["sslrootcert"]).read_bytes())
        conninfo = Endpoint("target", {**params, "dbname": MAINTENANCE_DB}).conninfo()
        argv = kube.exec_argv(
            self.kube, self.pod, ["sh", "-c", RESTORE_SCRIPT, "sh", conninfo], stdin=True
        )
        with private.open_private(log) as errlog:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog
            )
            assert proc.stdin
            try:
                header = [target.password.encode(), dump.sha256.encode(), ca]
                proc.stdin.write(b"\n".join(header) + b"\n")
                with dump.path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            code = proc.wait()
        if code != 0:
            raise errors.RestoreFailed(
                f"the restore in the pod stopped (exit {code}): {restore.first_error(log)}"
            )

    def close(self) -> None:
        if self._forward:
            self._forward.close()
            self._forward = None
