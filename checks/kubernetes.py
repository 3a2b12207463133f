"""The Kubernetes source: StackBlitz's embedded PostgreSQL pod, dumped and restored in-cluster.

Everything runs the pod's own programs through `kubectl exec -i` (never a TTY), and the restore
runs where the managed server is reachable, as the seed's does; the password travels on stdin,
never in an argv. What comes out of the pod is measured inside it as well, and the local copy
must match, because a broken exec stream can end early with exit code 0.
- --method stream: pg_dump into pg_restore inside the pod, from a snapshot exported and held on
  this host (checks.held); after verification, off the outage, the artifact is dumped again
  from that snapshot out to this host, and counted in the pod.
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
import uuid
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

# "pid (comm)" of every live process under $1 (a zombie has ended: nothing to stop), for the
# scripts that stop a run's programs in the pod (GUARD, STOP_SCRIPT).
_KIDS = """sbm_kids() {
  for stat in /proc/[0-9]*/stat; do
    read -r pid comm state ppid rest 2>/dev/null < "$stat" || continue
    if [ "$ppid" = "$1" ] && [ "$state" != Z ]; then echo "$pid $comm"; sbm_kids "$pid"; fi
  done
}
"""

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
GUARD = (
    _KIDS
    + """exec 5<&0
{ IFS= read -r word <&5 || word=
  sleep 1  # the output's own end ends stdin too: give the script time to say so
  if [ "$word" != end ] && ! [ -e "${sbm_done:-/nonexistent}" ]; then
    ours=$(sbm_kids $$)  # the whole tree first: the script may end while they are stopped
    printf '%s\n' "$ours" | while read -r pid comm; do
      case "$comm" in  # CONT too: a stopped program ends only once it runs again
        "(pg_dump)"|"(pg_restore)"|"(psql)"|"(tee)"|"(wc)"|"(sha256sum)")
          kill "$pid" || :; kill -CONT "$pid" || :;;
      esac
    done
  fi
} >/dev/null 2>&1 &
"""
)
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
trap 'exit 143' TERM  # the EXIT trap runs on a SIGTERM too (STOP_SCRIPT's)
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
# --method stream: $2 is the database, $3 the user (as in DUMP_SCRIPT), $4 the snapshot exported
# on this host and held there (checks.held), $5 `sbm-run=<token>`, which only STOP_SCRIPT reads.
# pg_dump's archive goes straight into pg_restore through a fifo (the seed's programs and
# network path to the target), and nowhere else: the archive is dumped again from the same
# snapshot after verification (ARTIFACT_SCRIPT), so the copy carries no file, no hash and no
# second stream. pg_restore's success proves the archive whole in the pod.
# For the progress line and the stall watch (checks.stall), a reporter prints
# `sbm-progress:<bytes>` on stdout once a second: what pg_dump has written (`wchar` in
# /proc/<pid>/io: the kernel counts it, no byte is copied to count it). Where that file cannot
# be read, it says so on stderr and prints `sbm-cpu:<ticks>`, pg_dump's CPU time from
# /proc/<pid>/stat, which moves only while the copy does: the stall watch still sees a stall.
# Statuses go to stderr, marked, with pg_restore's own messages. Only the reporter holds the
# exec's stdout (fd 3), so this host sees it end once pg_dump has ended, not once the restore
# has built its indexes: the stall watch covers the copy alone.
STREAM_SCRIPT = (
    _LOGIN
    + 'sbm_done="$dir/out"\n'
    + GUARD
    + f"""set +e  # every status is reported, not just the first failure
exec 3>&1 >&2
mkfifo "$dir/archive"
{{ pg_restore {" ".join(_RESTORE)} -d "$1" < "$dir/archive"
  echo "sbm-pg-restore-exit:$?"; }} 3>&- &
restoring=$!
pg_dump {" ".join(stream.PG_DUMP_FLAGS)} --snapshot="$4" -U "$3" -d "$2" > "$dir/archive" 3>&- &
dumping=$!
{{ said=
  while [ ! -e "$sbm_done" ]; do
    if n=$(sed -n 's/^wchar: //p' "/proc/$dumping/io" 2>/dev/null) && [ -n "$n" ]; then
      printf 'sbm-progress:%s\\n' "$n"
    elif read -r _ _ _ _ _ _ _ _ _ _ _ _ _ u s _ 2>/dev/null < "/proc/$dumping/stat"; then
      if [ -z "$said" ]; then
        echo "sbm: /proc/$dumping/io cannot be read in the pod: progress is pg_dump's CPU time" >&2
        said=yes
      fi
      printf 'sbm-cpu:%s\\n' "$((u + s))"
    fi
    sleep 1
  done
}} >&3 3>&- &
reporting=$!
exec 3>&-
wait "$dumping"
echo "sbm-pg-dump-exit:$?"
: > "$sbm_done"
wait "$restoring"
wait "$reporting"
"""
)

# A stream whose exec was cut off here (kubectl killed, the connection lost, a signal) runs on in
# the pod until its watchdog sees stdin end, which the exec's stream may deliver late: a
# pg_restore that connects to the target after the run's cleanup has looked there would create
# the database behind it. So the cleanup first stops, through an exec of its own, every process
# of the script whose arguments hold `sbm-run=$1` (the script and its subshells share its
# arguments) and every process under them, until none is left, at most 20 s; exit 0 once none
# is. The script's TERM trap still removes its temporary directory.
STOP_SCRIPT = (
    _KIDS
    + """mark="sbm-run=$1"
tries=0
while [ "$tries" -lt 100 ]; do
  ours=
  for cmdline in /proc/[0-9]*/cmdline; do
    pid=${cmdline#/proc/}; pid=${pid%/cmdline}
    read -r _ _ state _ 2>/dev/null < "/proc/$pid/stat" || continue
    [ "$state" = Z ] && continue
    if tr '\\0' '\\n' < "$cmdline" 2>/dev/null | grep -qxF -- "$mark"; then
      ours="$ours $pid $(sbm_kids "$pid" | while read -r kid _; do echo "$kid"; done)"
    fi
  done
  [ -z "$ours" ] && exit 0
  for pid in $ours; do kill "$pid" 2>/dev/null; kill -CONT "$pid" 2>/dev/null; done
  sleep 0.2
  tries=$((tries + 1))
done
exit 1
"""
)
STOP_WAIT_S = 40  # STOP_SCRIPT's own 20 s, and the exec's start

# Stage 6 (artifact), after verification: pg_dump as in STREAM_SCRIPT, from the held snapshot
# ($3; $1 the database, $2 the user), out on stdout (fd 3) to this host, where it is written
# with its SHA-256 (stream.keep), and through `wc -c`: the count, marked on stderr with pg_dump's
# status, proves the copy here whole (an exec stream's known failure is ending early with exit
# code 0). Nothing is written in the pod.
ARTIFACT_SCRIPT = (
    GUARD + f'{{ {{ pg_dump {" ".join(stream.PG_DUMP_FLAGS)} --snapshot="$3" -U "$2" -d "$1"; '
    'echo "sbm-pg-dump-exit:$?" >&2; } | tee /dev/fd/3 | wc -c | '
    'sed "s/^ */sbm-bytes:/" >&2; } 3>&1\n'
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
_CPU = re.compile(rb"^sbm-cpu:(\d+)")
FETCH_TRIES = 2  # the artifact's exec stream cut: one more try
ARTIFACT_HOW = (
    "dumped after verification, off the outage, from the copy's own snapshot (the rows the "
    "target was loaded with), by the pod's pg_dump through kubectl exec"
)
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
    # --method stream: the copy's part once it succeeded, until the artifact is dumped from the
    # snapshot held for it (stage 6; checks.held), and which snapshot that was.
    kept: list[stream.Part] | None = None
    artifact_snapshot: str | None = None
    _held: held.Held | None = field(default=None, repr=False)

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

    def _run(
        self, script: str, *args: str, stdin: bytes | None = None, timeout: float | None = None
    ) -> bytes:
        argv = kube.exec_argv(
            self.kube, self.pod, ["sh", "-c", script, "sh", *args], stdin=stdin is not None
        )
        done = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=timeout)
        if done.returncode != 0:
            raise errors.ConnectionFailed(
                f"kubectl exec in {self.pod.namespace}/{self.pod.name} failed: "
                f"{done.stderr.decode(errors='replace').strip()[-300:]}"
            )
        return done.stdout

    def endpoint(self) -> Endpoint:
        """The source through a port-forward, logging in with the pod's own credentials."""
        if self._forward is not None and not self._forward.alive():
            # Ended (a killed kubectl, a restarted pod): a new one, for the artifact's held
            # snapshot check (checks.held) as for anything else after it.
            self._forward.close()
            self._forward = None
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
        target: Endpoint,
        *,
        target_major: int,
        log: Path,
        progress: Progress | None = None,
        early: overlap.Early | None = None,
    ) -> list[stream.Part]:
        """The pod's pg_dump into the pod's pg_restore (the seed's programs and network path to
        the target), reading a snapshot exported here (through the port-forward) and held for
        the artifact (`fetch_kept`, after verification: checks.held); nothing else is written,
        here or in the pod. With `early`, the source's early digests read the same snapshot
        while the data streams, the target's run once the restore has ended (checks.overlap)."""
        log = log.with_name(log.name + ".log")  # `log` names the logs; there is one here
        self.remove_kept()
        snapshot = held.export(self.endpoint())
        try:
            if early:
                early.start_source(self.connect, snapshot.name)
            part = self._stream(target, log=log, progress=progress, snapshot=snapshot.name)
            if early:
                early.all_loaded()
        except BaseException:
            snapshot.close()
            if early:
                early.close()  # before the copy's cleanup drops what it created
            raise
        self._held, self.kept = snapshot, [part]
        return [part]

    def _stream(
        self, target: Endpoint, *, log: Path, progress: Progress | None, snapshot: str
    ) -> stream.Part:
        run = uuid.uuid4().hex
        proc = self._start_restore(
            STREAM_SCRIPT,
            target,
            subprocess.PIPE,
            self.database,
            self.pod.user,
            snapshot,
            f"sbm-run={run}",
            stdout=subprocess.PIPE,
        )
        pod = _PodDump(proc)  # stdin stays open: the pod's watchdog (GUARD) reads it
        reported = _Reported(progress)
        try:
            with progress.streaming() if progress else contextlib.nullcontext():
                for line in pod.stdout:  # ends when pg_dump has ended
                    reported.read(line)
            code = proc.wait()
            pod.release()
            pod.join()
            err = pod.stderr()
            with private.open_private(log) as out:
                out.write(err)
            # The restore's own error first: a pg_dump cut off by it failing says nothing new.
            restored, dumped = _RESTORE_EXIT.search(err), _EXIT.search(err)
            if restored and restored[1] != b"0":
                raise _restore_failed(int(restored[1]), log)
            said = err.decode(errors="replace").strip()[-300:]
            if code != 0:
                raise errors.DumpFailed(
                    f"kubectl exec exited with {code} ({said}): take the dump again"
                )
            if not dumped:  # an exec stream's known failure: ending early with exit code 0
                raise errors.DumpFailed(
                    "the exec stream ended before the pod reported pg_dump's exit status: "
                    "take the dump again"
                )
            if dumped[1] != b"0":
                raise errors.DumpFailed(f"pg_dump in the pod failed ({said}): take the dump again")
            if not restored:
                raise _restore_failed(code, log)
        except BaseException:
            pod.abort()
            self._stop_in_pod(run)
            raise
        log.unlink()
        by_hand = shlex.join(["pg_restore", *_RESTORE, "-d", MAINTENANCE_DB])
        return stream.Part(f"{self.database}.dump", reported.bytes, None, by_hand)

    def _stop_in_pod(self, run: str) -> None:
        """Stop what is left in the pod of the stream script marked `run` (STOP_SCRIPT). A pod
        that cannot be reached, or one where something outlives it, leaves it to the script's
        watchdog and the cleanup's wait for the restorer's sessions (restore.drop_partial)."""
        with contextlib.suppress(errors.ConnectionFailed, subprocess.TimeoutExpired):
            self._run(STOP_SCRIPT, run, timeout=STOP_WAIT_S)

    def kept_evidence(self) -> dict[str, object]:
        """For the dump's evidence until the artifact is written. `streamed_bytes` is what
        pg_dump had written at the pod's last count (once a second: the kernel's count of a
        process is gone with it), not the archive's size, which stage 6 records."""
        return {
            "artifact": ARTIFACT_HOW,
            "streamed_bytes": sum(p.bytes for p in self.kept or []),
            "written": False,
        }

    def fetch_kept(self, directory: Path, *, progress: Progress | None = None) -> list[stream.Part]:
        """The artifact: the pod's pg_dump run again, from the copy's snapshot (or an equal one:
        checks.held), out through kubectl exec into `directory` with its size and SHA-256; one
        more try when the exec stream is cut."""
        assert self._held and self.kept
        (part,) = self.kept
        with held.same_data(self.endpoint(), self._held) as (snapshot, how):
            self.artifact_snapshot = how
            for attempt in range(1, FETCH_TRIES + 1):
                try:
                    size, sha = self._dump_artifact(directory / part.name, snapshot, progress)
                    break
                except errors.DumpFailed as e:
                    if attempt == FETCH_TRIES:
                        raise errors.DumpFailed(
                            f"{e} (tried {FETCH_TRIES} times): the target is verified and kept, "
                            "only its archive is missing: check the connection to the cluster, "
                            "then take one by hand (pg_dump -Fc of the target) if the change "
                            "needs it"
                        ) from None
        return [stream.Part(part.name, size, sha, part.restore)]

    def _dump_artifact(
        self, dest: Path, snapshot: str, progress: Progress | None
    ) -> tuple[int, str]:
        argv = kube.exec_argv(
            self.kube,
            self.pod,
            ["sh", "-c", ARTIFACT_SCRIPT, "sh", self.database, self.pod.user, snapshot],
            stdin=True,
        )
        pod = _PodDump(
            children.popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
        try:
            return stream.keep(
                pod.stdout,
                dest,
                release=lambda size, _sha: pod.finish(size=size, then="the archive is not kept"),
                progress=progress,
            )
        except BaseException:
            pod.abort()
            raise

    def remove_kept(self) -> None:
        """Release the held snapshot (idempotent); nothing of the archive is ever in the pod."""
        if self._held:
            self._held.close()
        self._held, self.kept = None, None

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
        self.remove_kept()
        if self._forward:
            self._forward.close()
            self._forward = None


class _Reported:
    """What STREAM_SCRIPT's reporter says once a second: pg_dump's bytes so far, or its CPU time
    where the pod's /proc/<pid>/io is unreadable (that moves the stall watch, not the count)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.bytes = 0
        self._ticks = b""

    def read(self, line: bytes) -> None:
        written, cpu = _PROGRESS.match(line), _CPU.match(line)
        if written and int(written[1]) > self.bytes:
            if self.progress:
                self.progress.advance(int(written[1]) - self.bytes)
            self.bytes = int(written[1])
        elif cpu and cpu[1] != self._ticks:
            if self.progress:
                self.progress.beat()
            self._ticks = cpu[1]


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

    def finish(
        self,
        sql_sha256: str | None = None,
        size: int | None = None,
        *,
        then: str = "take the dump again",
    ) -> None:
        """Raise DumpFailed (ending with `then`) unless pg_dump succeeded in the pod and what
        arrived here is what it sent: the same SHA-256 (--method seed) or the same byte count
        (the artifact, --method stream)."""
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
        elif not exit_match:
            problem = "the exec stream ended before the pod reported pg_dump's exit status"
        elif exit_match[1] != b"0":
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
            raise errors.DumpFailed(f"{problem}: {then}")
