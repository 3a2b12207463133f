"""The Kubernetes source: StackBlitz's embedded PostgreSQL pod, dumped and restored in-cluster.

Everything runs the pod's own programs through `kubectl exec -i` (never a TTY), and the restore
runs where the managed server is reachable, as the seed's does; the password travels on stdin,
never in an argv. What comes out of the pod is measured inside it as well, and the local copy
must match, because a broken exec stream can end early with exit code 0.
- --method stream: pg_dump into pg_restore inside the pod, the archive teed out to this host
  (the data crosses kubectl once, which is what it costs) and counted.
- --method seed: the plain dump streams out, and back in as the gzip file, hashed in the pod
  before psql may read it.
"""

from __future__ import annotations

import base64
import contextlib
import re
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import psycopg

from checks import (
    children,
    errors,
    held,
    kube,
    overlap,
    podcopy,
    private,
    restore,
    scratch,
    stream,
)
from checks import dump as dumping
from checks.dumpfile import CHUNK, DumpFile
from checks.endpoint import Endpoint
from checks.progress import Progress
from checks.restore import MAINTENANCE_DB

# The local side of a script that copies holds the exec's stdin open until the script has
# ended, and then sends "end". Stdin ending without it means the local side is gone (kubectl
# killed, the runbook stopped, the connection cut): an exec'd process is not stopped with its
# stream, and would block for ever on an output nobody reads, holding its sessions on both
# servers. So this watchdog then stops every program the script started; the script ends, and
# its trap removes its temporary directory. The container runtime also ends stdin once the
# exec's stdout has ended, which is how a whole stream ends: a script that has put its output
# out marks it done in $sbm_done, and the watchdog then lets it finish (a restore building its
# indexes ends by itself, or when the run's cleanup drops its database). It reads fd 5, a copy
# of stdin: a background job's own stdin is /dev/null. The script never waits for it.
GUARD = """sbm_kids() {  # "pid (comm)" of every process under $1
  for stat in /proc/[0-9]*/stat; do
    read -r pid comm state ppid rest 2>/dev/null < "$stat" || continue
    if [ "$ppid" = "$1" ]; then echo "$pid $comm"; sbm_kids "$pid"; fi
  done
}
exec 5<&0
{ IFS= read -r word <&5 || word=
  sleep 1  # the output's own end ends stdin too: give the script time to say so
  if [ "$word" != end ] && ! [ -e "${sbm_done:-/nonexistent}" ]; then
    ours=$(sbm_kids $$)  # the whole tree first: the script may end while they are stopped
    printf '%s\n' "$ours" | while read -r pid comm; do
      case "$comm" in
        "(pg_dump)"|"(pg_restore)"|"(psql)"|"(tee)"|"(wc)"|"(sha256sum)") kill "$pid" || :;;
      esac
    done
  fi
} >/dev/null 2>&1 &
"""
END = b"end\n"  # the local side has all it needs: the watchdog leaves the script be

# --method seed: $1 is the database, $2 the user (the container's POSTGRES_USER may be unset, as
# when POSTGRES_USER_FILE gives it). The SQL goes to stdout (fd 3) and through sha256sum;
# pg_dump's status and the hash go to stderr, marked, so that they are told apart from pg_dump's
# own messages.
DUMP_SCRIPT = (
    GUARD + f'{{ {{ pg_dump {" ".join(dumping.PG_DUMP_FLAGS)} -U "$2" -d "$1"; '
    'echo "sbm-pg-dump-exit:$?" >&2; } | tee /dev/fd/3 | sha256sum | '
    'sed "s/^/sbm-sha256:/" >&2; } 3>&1\n'
)


# Both restore scripts read, on stdin: the password line, then the target's CA bundle
# base64-encoded on one line (empty when none). $1 is the target's conninfo (no secret in it).
# Files live in a private temporary directory removed on exit.
_LOGIN = """set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
IFS= read -r PGPASSWORD
export PGPASSWORD
IFS= read -r ca
if [ -n "$ca" ]; then
  printf %s "$ca" | base64 -d > "$dir/root.crt"
  export PGSSLROOTCERT="$dir/root.crt"
fi
"""
_PSQL = 'psql -X -q -v ON_ERROR_STOP=1 -d "$1"\n'
# --method seed: then the dump's SHA-256 line and the gzip file, hashed before psql reads it.
RESTORE_SCRIPT = (
    _LOGIN
    + """IFS= read -r expected
cat > "$dir/dump.sql.gz"
actual=$(sha256sum "$dir/dump.sql.gz" | cut -d ' ' -f 1)
if [ "$actual" != "$expected" ]; then
  echo "sbm: the dump reached the pod incomplete (sha256 $actual, sent $expected)" >&2
  exit 86
fi
gunzip -c "$dir/dump.sql.gz" | """
    + _PSQL
)
_RESTORE = stream.restore_flags(creates=True)
# --method stream: $2 is the database, $3 the user (as in DUMP_SCRIPT), $4 the directory in the
# pod that keeps the archive (checks.podcopy), or empty when it streams out, $5 a snapshot that
# pg_dump reads (exported on this host for the early digests, checks.overlap) or empty.
# pg_dump's archive goes straight into pg_restore in the pod (through a fifo) and through tee,
# once, to the artifact:
# - streamed out: to this host on stdout (fd 3) and to `wc -c` through another fifo: the bytes
#   cross kubectl once, not out and back in. The count proves the copy here whole, since the
#   exec stream's known failure is ending early (TLS guards the bytes themselves).
# - kept in the pod: into $4/archive, and through sha256sum, so that the copy fetched after
#   verification is proven to be the bytes pg_restore read; stdout carries only the file's
#   size once a second (the progress, and what the stall watch sees).
# pg_restore's success proves the archive whole in the pod. Statuses, the count and the hash go
# to stderr, marked, with pg_restore's own messages. Only tee (or the size reporter) holds the
# exec's stdout (fd 3; every other program writes to stderr), so this host sees it end when
# pg_dump's output does, not once the restore has built its indexes: the stall watch
# (checks.stall) covers the copy alone. A kept archive stays only when both programs succeeded.
STREAM_SCRIPT = (
    _LOGIN
    + 'sbm_done="$dir/out"\n'
    + GUARD
    + f"""set +e  # every status is reported, not just the first failure
keep=${{4:-}}
exec 3>&1 >&2
mkfifo "$dir/count" "$dir/archive"
if [ -n "$keep" ]; then
  umask 077  # the archive holds every user's data
  mkdir -- "$keep" 3>&- || exit 87
  trap '[ -e "$dir/kept" ] || rm -rf -- "$keep"; rm -rf -- "$dir"' EXIT
  sha256sum < "$dir/count" 3>&- | sed 's/^\\([0-9a-f]*\\).*/sbm-sha256:\\1/' 3>&- &
else
  wc -c < "$dir/count" 3>&- | sed 's/^ */sbm-bytes:/' 3>&- &
fi
counted=$!
{{ pg_restore {" ".join(_RESTORE)} -d "$1" < "$dir/archive"
  status=$?; echo "sbm-pg-restore-exit:$status"; echo "$status" > "$dir/restored"; }} 3>&- &
restoring=$!
if [ -n "$keep" ]; then
  {{ pg_dump {" ".join(stream.PG_DUMP_FLAGS)} ${{5:+"--snapshot=$5"}} -U "$3" -d "$2"
    status=$?; echo "sbm-pg-dump-exit:$status" >&2; echo "$status" > "$dir/dumped"; }} 3>&- |
    tee "$dir/archive" "$dir/count" > "$keep/archive" 3>&- &
  copying=$!
  while [ ! -e "$sbm_done" ]; do
    printf 'sbm-progress:%s\\n' "$(stat -c %s "$keep/archive" 2>/dev/null || echo 0)"
    sleep 1
  done >&3 2>/dev/null &
  reporting=$!
else
  {{ pg_dump {" ".join(stream.PG_DUMP_FLAGS)} ${{5:+"--snapshot=$5"}} -U "$3" -d "$2"
    status=$?; echo "sbm-pg-dump-exit:$status" >&2; echo "$status" > "$dir/dumped"; }} 3>&- |
    tee "$dir/archive" "$dir/count" >&3 &
  copying=$!
fi
exec 3>&-
wait "$copying"
: > "$sbm_done"
wait "$restoring"
wait "$counted"
if [ -n "$keep" ]; then
  wait "$reporting"  # it reads $sbm_done: the trap removes it
  echo "sbm-bytes:$(stat -c %s "$keep/archive")"
  if [ "$(cat "$dir/dumped")" = 0 ] && [ "$(cat "$dir/restored")" = 0 ]; then : > "$dir/kept"; fi
fi
"""
)

# The preflight's scratch restore: the schema alone, pg_dump straight into pg_restore of the
# scratch database ($1 names it; $2 the database, $3 the user, as in STREAM_SCRIPT); both
# statuses marked on stderr, the script's status the restore's.
SCHEMA_SCRIPT = (
    _LOGIN
    + f"""set +e
{{ pg_dump {" ".join(scratch.DUMP_FLAGS)} -U "$3" -d "$2"
  echo "sbm-pg-dump-exit:$?" >&2; }} |
  {{ pg_restore {" ".join(stream.restore_flags(creates=False))} -d "$1" >&2
    status=$?; echo "sbm-pg-restore-exit:$status" >&2; exit $status; }}
"""
)

# The container's password as the official image's entrypoint takes it: POSTGRES_PASSWORD_FILE
# (a mounted Secret; trailing newlines dropped, as the entrypoint's $(< file) does), else
# POSTGRES_PASSWORD.
PASSWORD_SCRIPT = (
    'if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then p=$(cat -- "$POSTGRES_PASSWORD_FILE") || '
    'exit 1; else p=${POSTGRES_PASSWORD:-}; fi; printf %s "$p"'
)

_EXIT = re.compile(rb"^sbm-pg-dump-exit:(\d+)$", re.MULTILINE)
_RESTORE_EXIT = re.compile(rb"^sbm-pg-restore-exit:(\d+)$", re.MULTILINE)
_SHA = re.compile(rb"^sbm-sha256:([0-9a-f]{64})", re.MULTILINE)
_BYTES = re.compile(rb"^sbm-bytes:(\d+)", re.MULTILINE)
_PROGRESS = re.compile(rb"^sbm-progress:(\d+)")
FETCH_TRIES = 2
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
    # --method stream: preflight's choice (checks.podcopy); None streams the archive out.
    keeping: podcopy.Keeping | None = None
    kept: list[stream.Part] | None = None  # the archive in the pod, once the copy succeeded
    _in_pod: bool = field(default=False, repr=False)  # a copy may be there: remove_kept it
    _fetched: bool = field(default=False, repr=False)

    def plan_keeping(self, *, stamp: str, archive_bound: int) -> podcopy.Keeping:
        """Preflight: keep the archive in the pod during the copy when it has room there
        (removing what killed runs left), and remember the choice for the stream."""
        self.keeping = podcopy.decide(
            self._run(podcopy.ROOM_SCRIPT).decode(errors="replace"),
            stamp=stamp,
            archive_bound=archive_bound,
            ephemeral_storage_limit=self.pod.ephemeral_storage_limit,
        )
        return self.keeping

    def describe(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "namespace": self.pod.namespace,
            "pod": self.pod.name,
            "container": self.pod.container,
            "context": self.kube.context,
            "host": "port-forward",
            "port": self._forward.port if self._forward else None,
            "discovery": self.pod.found,
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
            self._password = self._run(PASSWORD_SCRIPT).decode() or None
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
            "pg_restore": self._version,
            "where": f"pod {self.pod.namespace}/{self.pod.name}",
        }

    def tools(self, *, source_major: int, target_major: int) -> None:
        """The container's pg_dump must be the server's own major: a container whose pg_dump
        answers but differs is not the database's (a sidecar built on another image)."""
        version = self.tool_versions()["pg_dump"]
        if version.split(".")[0] != str(source_major):
            raise errors.ToolMissing(
                f"pg_dump in container {self.pod.container} of pod {self.pod.namespace}/"
                f"{self.pod.name} is {version}, the server is {source_major}: this is not the "
                "database's container; pass --source-container NAME"
            )

    def _start_dump(self) -> _PodDump:
        argv = kube.exec_argv(
            self.kube,
            self.pod,
            ["sh", "-c", DUMP_SCRIPT, "sh", self.database, self.pod.user],
            stdin=True,
        )
        return _PodDump(
            children.popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )

    def dump(self, dest: Path, *, target_major: int, progress: Progress | None = None) -> DumpFile:
        pod_dump = self._start_dump()
        try:
            written = dumping.write_dump(pod_dump.stdout, dest, progress)
        except errors.DumpFailed as e:
            raise errors.DumpFailed(f"{e} (kubectl exec: {pod_dump.abort()})") from None
        try:
            pod_dump.finish(written.sql_sha256)
        except errors.DumpFailed:
            dest.unlink(missing_ok=True)
            raise
        return written

    def _start_restore(
        self,
        script: str,
        target: Endpoint,
        errlog: BinaryIO | int,
        *args: str,
        stdout: int = subprocess.DEVNULL,
        dbname: str = MAINTENANCE_DB,
    ) -> subprocess.Popen[bytes]:
        """A restore script in the pod, logged in: the password and CA bundle already sent on
        its stdin."""
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
        conninfo = Endpoint("target", {**params, "dbname": dbname}).conninfo()
        argv = kube.exec_argv(
            self.kube, self.pod, ["sh", "-c", script, "sh", conninfo, *args], stdin=True
        )
        proc = children.popen(argv, stdin=subprocess.PIPE, stdout=stdout, stderr=errlog)
        assert proc.stdin
        proc.stdin.write(target.password.encode() + b"\n" + ca + b"\n")
        proc.stdin.flush()
        return proc

    def restore(
        self, dump: DumpFile, target: Endpoint, *, log: Path, progress: Progress | None = None
    ) -> None:
        with private.open_private(log) as errlog:
            proc = self._start_restore(RESTORE_SCRIPT, target, errlog)
            assert proc.stdin
            if progress:
                progress.bytes_expected = dump.bytes  # counted as sent: compressed
            try:
                proc.stdin.write(dump.sha256.encode() + b"\n")
                with dump.path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        proc.stdin.write(chunk)
                        if progress:
                            progress.add(chunk, count_rows=False)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            code = proc.wait()
        if code != 0:
            raise _restore_failed(code, log)

    def stream(
        self,
        directory: Path,
        target: Endpoint,
        *,
        target_major: int,
        log: Path,
        progress: Progress | None = None,
        early: overlap.Early | None = None,
    ) -> list[stream.Part]:
        """The pod's pg_dump into the pod's pg_restore (the seed's programs and network path to
        the target), the archive coming out to this host as it goes, or kept in the pod for
        `fetch_kept` when preflight found room there (checks.podcopy). With `early`, pg_dump
        reads a snapshot exported here, which the source's early digests read while the data
        streams (checks.overlap); the target's run once the restore has ended."""
        log = log.with_name(log.name + ".log")  # `log` names the logs; there is one here
        if early is None:
            return self._stream(directory, target, log=log, progress=progress, snapshot="")
        try:
            # Held open for the whole copy: pg_dump imports the snapshot as it starts, and the
            # pod gives no sign of that here before its output arrives.
            snapshot = held.export(self.endpoint())
            try:
                early.start_source(self.connect, snapshot.name)
                parts = self._stream(
                    directory, target, log=log, progress=progress, snapshot=snapshot.name
                )
            finally:
                snapshot.close()
            early.all_loaded()
        except BaseException:
            early.close()  # before the copy's cleanup drops what it created
            raise
        return parts

    def _stream(
        self,
        directory: Path,
        target: Endpoint,
        *,
        log: Path,
        progress: Progress | None,
        snapshot: str,
    ) -> list[stream.Part]:
        if self.keeping and self.keeping.in_pod:
            return self._stream_kept(target, log=log, progress=progress, snapshot=snapshot)
        proc = self._start_restore(
            STREAM_SCRIPT,
            target,
            subprocess.PIPE,
            self.database,
            self.pod.user,
            "",
            snapshot,
            stdout=subprocess.PIPE,
        )
        pod = _PodDump(proc)  # stdin stays open: the pod's watchdog (GUARD) reads it

        def check(size: int, _sha256: str) -> None:
            # The restore's own error first: a pg_dump cut off by it failing says nothing new.
            code = proc.wait()
            pod.release()
            pod.join()
            with private.open_private(log) as out:
                out.write(pod.stderr())
            restored = _RESTORE_EXIT.search(pod.stderr())
            if restored and restored[1] != b"0":
                raise _restore_failed(int(restored[1]), log)
            pod.finish(size=size)
            if not restored:
                raise _restore_failed(code, log)

        name = f"{self.database}.dump"
        try:
            size, sha = stream.tee(
                pod.stdout, directory / name, None, release=check, progress=progress
            )
        except BaseException:
            pod.abort()
            raise
        log.unlink()
        by_hand = shlex.join(["pg_restore", *_RESTORE, "-d", MAINTENANCE_DB])
        return [stream.Part(name, size, sha, by_hand)]

    def _stream_kept(
        self, target: Endpoint, *, log: Path, progress: Progress | None, snapshot: str
    ) -> list[stream.Part]:
        """The stream with the archive kept in the pod: only its size comes out, once a second."""
        assert self.keeping
        proc = self._start_restore(
            STREAM_SCRIPT,
            target,
            subprocess.PIPE,
            self.database,
            self.pod.user,
            self.keeping.directory,
            snapshot,
            stdout=subprocess.PIPE,
        )
        pod = _PodDump(proc)  # stdin stays open: the pod's watchdog (GUARD) reads it
        self._in_pod = True
        try:
            with progress.streaming() if progress else contextlib.nullcontext():
                done = 0
                for line in pod.stdout:  # ends when pg_dump's output has ended
                    size = _PROGRESS.match(line)
                    if size and progress and int(size[1]) > done:
                        progress.advance(int(size[1]) - done)
                        done = int(size[1])
            code = proc.wait()
            pod.release()
            pod.join()
            err = pod.stderr()
            with private.open_private(log) as out:
                out.write(err)
            restored, dumped = _RESTORE_EXIT.search(err), _EXIT.search(err)
            if restored and restored[1] != b"0":
                raise _restore_failed(int(restored[1]), log)
            if not dumped or dumped[1] != b"0":
                raise errors.DumpFailed(
                    f"pg_dump in the pod failed ({err.decode(errors='replace').strip()[-300:]}): "
                    "take the dump again"
                )
            if not restored:
                raise _restore_failed(code, log)
            sha, size = _SHA.search(err), _BYTES.search(err)
            if code != 0 or not sha or not size:
                raise errors.DumpFailed(
                    f"the pod did not report the kept archive's SHA-256 and size (kubectl exec "
                    f"exited with {code}): take the dump again"
                )
        except BaseException:
            pod.abort()
            self.remove_kept()
            raise
        log.unlink()
        by_hand = shlex.join(["pg_restore", *_RESTORE, "-d", MAINTENANCE_DB])
        name = f"{self.database}.dump"
        self.kept = [stream.Part(name, int(size[1]), sha[1].decode(), by_hand)]
        return list(self.kept)

    def kept_evidence(self) -> dict[str, object]:
        """For the dump's evidence while the archive is in the pod."""
        assert self.keeping
        return {
            "artifact": self.keeping.how(),
            "in_pod": f"{self.pod.namespace}/{self.pod.name}:{self.keeping.archive}",
            "fetched": False,
        }

    def fetch_kept(self, directory: Path, *, progress: Progress | None = None) -> list[stream.Part]:
        """The archive kept in the pod, fetched into `directory`: its SHA-256 here must be the
        one the pod computed as pg_restore read it (an exec stream can end early with exit code
        0: one more try then). The pod's copy stays until `remove_kept`."""
        assert self.keeping and self.kept
        fetched = []
        for part in self.kept:
            for attempt in range(1, FETCH_TRIES + 1):
                try:
                    self._fetch(part, directory / part.name, progress)
                    break
                except errors.DumpFailed as e:
                    if attempt == FETCH_TRIES:
                        raise errors.DumpFailed(
                            f"{e} (tried {FETCH_TRIES} times): the target's copy was verified, "
                            "but this run keeps no archive of it; check the connection to the "
                            "cluster, or take a dump of the source if one is needed"
                        ) from None
            fetched.append(part)
        self._fetched = True
        return fetched

    def _fetch(self, part: stream.Part, dest: Path, progress: Progress | None) -> None:
        assert self.keeping
        argv = kube.exec_argv(
            self.kube,
            self.pod,
            ["sh", "-c", podcopy.FETCH_SCRIPT, "sh", self.keeping.archive],
            stdin=False,
        )
        proc = children.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout and proc.stderr

        def check(size: int, sha256: str) -> None:
            code = proc.wait()
            said = proc.stderr.read().decode(errors="replace").strip()[-300:]  # type: ignore[union-attr]
            if code != 0:
                raise errors.DumpFailed(f"kubectl exec fetching the archive failed: {said}")
            if (size, sha256) != (part.bytes, part.sha256):
                raise errors.DumpFailed(
                    f"the archive fetched from the pod is not the one restored: {size} bytes, "
                    f"SHA-256 {sha256} here; {part.bytes} bytes, SHA-256 {part.sha256} in the pod"
                )

        try:
            stream.tee(proc.stdout, dest, None, release=check, progress=progress)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise

    def remove_kept(self) -> str | None:
        """Remove the pod's copy of the archive, if this run may have made one (idempotent);
        what became of it."""
        if not self._in_pod or not self.keeping:
            return None
        where = f"{self.keeping.directory} in pod {self.pod.namespace}/{self.pod.name}"
        argv = kube.exec_argv(
            self.kube,
            self.pod,
            ["sh", "-c", podcopy.REMOVE_SCRIPT, "sh", self.keeping.directory],
            stdin=False,
        )
        try:
            done = subprocess.run(argv, capture_output=True, check=False, timeout=60)
        except subprocess.TimeoutExpired:
            return f"the archive kept in {where} could not be removed (no answer in 60 s)"
        if done.returncode == podcopy.ABSENT:  # the pod's script removed it, or a new pod
            self._in_pod = False
            self.kept = None
            return None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return (
                f"the archive kept in {where} could not be removed ({'; '.join(said)}); the "
                "next run's preflight removes it"
            )
        self._in_pod = False
        lost = self.kept and not self._fetched
        self.kept = None
        if lost:
            return f"the archive kept in {where} was removed before it was fetched"
        return f"the archive kept in {where} was removed"

    def restore_schema(self, into: Endpoint, *, target_major: int, log: Path) -> None:
        with private.open_private(log) as errlog:
            proc = self._start_restore(
                SCHEMA_SCRIPT, into, errlog, self.database, self.pod.user, dbname=into.dbname
            )
            try:
                assert proc.stdin
                proc.stdin.close()  # the script has its two lines
                code = proc.wait()
            finally:
                if proc.poll() is None:  # interrupted: the scratch drop ends the pod's restore
                    proc.kill()
                    proc.wait()
        err = log.read_bytes()
        dumped, restored = _EXIT.search(err), _RESTORE_EXIT.search(err)
        if code != 0 or not dumped or dumped[1] != b"0" or not restored or restored[1] != b"0":
            raise _restore_failed(code, log)

    def close(self) -> None:
        if self._forward:
            self._forward.close()
            self._forward = None


def _restore_failed(code: int, log: Path) -> errors.RestoreFailed:
    return errors.RestoreFailed(
        f"the restore in the pod stopped (exit {code}): {restore.first_error(log)}"
    )


class _PodDump:
    """`kubectl exec` of a script that dumps: the dump on stdout; pg_dump's status and the hash
    or count, marked, on stderr."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout and proc.stderr
        self.proc = proc
        self.stdout: BinaryIO = proc.stdout
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(
            target=lambda: self._stderr.append(proc.stderr.read()),  # type: ignore[union-attr]
            daemon=True,
        )
        self._reader.start()

    def join(self) -> None:
        self._reader.join(30)

    def release(self) -> None:
        """The script has ended: its watchdog (GUARD) has nothing left to stop."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(END)
                self.proc.stdin.close()

    def stderr(self) -> bytes:
        return b"".join(self._stderr)

    def abort(self) -> str:
        """Stop it; what kubectl said, for the message."""
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        return self.stderr().decode(errors="replace").strip()[-300:]

    def finish(self, sql_sha256: str | None = None, size: int | None = None) -> None:
        """Raise DumpFailed unless pg_dump succeeded in the pod and what arrived here is what it
        sent: the same SHA-256 (--method seed) or the same byte count (--method stream)."""
        code = self.proc.wait()
        self.release()
        self._reader.join(30)
        err = self.stderr()
        exit_match = _EXIT.search(err)
        sent = _SHA.search(err) if sql_sha256 else _BYTES.search(err)
        here = sql_sha256 or str(size)
        problem = None
        if code != 0:
            problem = f"kubectl exec exited with {code}"
        elif not exit_match or exit_match[1] != b"0":
            problem = f"pg_dump in the pod failed ({err.decode(errors='replace').strip()[-300:]})"
        elif not sent:
            problem = "the pod did not report what it sent"
        elif sent[1].decode() != here:
            what = "SHA-256" if sql_sha256 else "bytes"
            problem = (
                f"the dump changed in transit: {what} {sent[1].decode()} in the pod, {here} "
                "here (the exec stream ended early)"
            )
        if problem:
            raise errors.DumpFailed(f"{problem}: take the dump again")
