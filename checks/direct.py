"""The direct source: a database the operator's host reaches (e.g. through a port-forward)."""

from __future__ import annotations

import functools
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from checks import (
    children,
    errors,
    held,
    overlap,
    parts,
    pgtools,
    private,
    restore,
    scratch,
    stream,
)
from checks import dump as dumping
from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint
from checks.progress import Progress

ARTIFACT_HOW = (
    "dumped after verification, off the outage, from the copy's own snapshot (the rows the "
    "target was loaded with)"
)


@dataclass
class DirectSource:
    endpoint: Endpoint
    pg_bindir: Path | None = None
    jobs: int = 2  # data streams at once: --jobs
    kind: str = "direct"
    _tools: pgtools.Toolset | None = field(default=None, repr=False)
    # --method stream: the copy's parts, once it succeeded, until the artifact is written from
    # the snapshot held for it (stage 6; checks.held).
    kept: list[stream.Part] | None = None
    artifact_snapshot: str | None = None  # which snapshot the artifact came from
    _held: held.Held | None = field(default=None, repr=False)
    _plan: list[parts.Part] = field(default_factory=list, repr=False)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "host": self.endpoint.host, "port": self.endpoint.port}

    def connect(self) -> psycopg.Connection:
        return self.endpoint.connect()

    def tools(self, *, source_major: int, target_major: int) -> pgtools.Toolset:
        """pg_dump, pg_restore and psql on this host (the stream's pair, the seed's psql), or
        ToolMissing naming where it looked and the packages to install."""
        if self._tools is None:
            self._tools = pgtools.for_migration(source_major, target_major, self.pg_bindir)
        return self._tools

    def tool_versions(self) -> dict[str, str]:
        if self._tools is None:
            return {}
        return {
            "pg_dump": self._tools.version,
            "psql": self._tools.version,
            "pg_restore": self._tools.version,
            "bindir": str(self._tools.bindir),
        }

    def secrets(self) -> set[str]:
        return {self.endpoint.password} if self.endpoint.password else set()

    def close(self) -> None:
        self.remove_kept()  # the held snapshot: every other connection is closed where opened

    def _tools_for(self, target_major: int) -> pgtools.Toolset:
        with self.connect() as conn:
            source_major = conn.info.server_version // 10000
        return self.tools(source_major=source_major, target_major=target_major)

    def _pg_dump(self, tools: pgtools.Toolset, flags: list[str]) -> list[str]:
        return [tools.path("pg_dump"), *flags, "-d", self.endpoint.conninfo()]

    def dump(self, dest: Path, *, target_major: int, progress: Progress | None = None) -> DumpFile:
        argv = self._pg_dump(self._tools_for(target_major), dumping.PG_DUMP_FLAGS)
        errlog = dest.with_name(dest.name + ".pg_dump.log")
        with private.open_private(errlog) as err:
            proc = children.popen(
                argv, stdout=subprocess.PIPE, stderr=err, env=self.endpoint.child_env()
            )
            assert proc.stdout
            try:
                written = dumping.write_dump(proc.stdout, dest, progress)
            except errors.DumpFailed:
                proc.kill()
                proc.wait()
                raise errors.DumpFailed(
                    f"pg_dump's output is not a whole dump: {_tail(errlog)}"
                ) from None
            code = proc.wait()
        if code != 0:
            dest.unlink(missing_ok=True)
            first = restore.first_error(errlog)
            raise errors.DumpFailed(f"pg_dump failed with exit code {code}: {first}")
        errlog.unlink()
        return written

    def stream(
        self,
        target: Endpoint,
        *,
        target_major: int,
        log: Path,
        progress: Progress | None = None,
        early: overlap.Early | None = None,
    ) -> list[stream.Part]:
        """The parts of checks.parts, each pg_dump into pg_restore, all from one snapshot,
        which stays held for the artifact (`fetch_kept`, after verification: checks.held);
        no file is written here. `early` digests both sides while they run (checks.overlap)."""
        tools = self._tools_for(target_major)
        self.remove_kept()
        done: list[stream.Part] = []
        snapshot = held.export(self.endpoint)
        try:
            if early:
                early.start_source(self.connect, snapshot.name)
            steps = parts.plan(snapshot.conn, self.jobs)
            for step in steps:
                # On any error or signal here, the children stop before the pool waits for
                # the threads that feed them.
                pool = ThreadPoolExecutor(max_workers=min(self.jobs, len(step)))
                with pool, children.stopped_on_error():
                    runs = {
                        pool.submit(
                            self._stream_part, tools, part, snapshot.name, target, log, progress
                        ): part
                        for part in step
                    }
                    for run in as_completed(runs):
                        run.result()
                        if early and runs[run].data:
                            early.loaded(runs[run])
                    done += [run.result() for run in runs]  # in the plan's order
            if early:
                early.all_loaded()
        except BaseException:
            snapshot.close()
            if early:
                early.close()  # before the copy's cleanup drops what it created
            raise
        self._held = snapshot
        self._plan = [part for step in steps for part in step]
        self.kept = done
        return done

    def _stream_part(
        self,
        tools: pgtools.Toolset,
        part: parts.Part,
        snapshot: str,
        target: Endpoint,
        log: Path,
        progress: Progress | None,
    ) -> stream.Part:
        argv = self._pg_dump(tools, self._part_flags(part, snapshot))
        into = target.with_dbname(
            restore.MAINTENANCE_DB if part.creates else str(self.endpoint.dbname)
        )
        restore_argv = restore.pg_restore_argv(tools, into.conninfo(), creates=part.creates)
        dump_log = log.with_name(f"{log.name}.{part.name}.pg_dump.log")
        restore_log = log.with_name(f"{log.name}.{part.name}.log")
        with (
            private.open_private(dump_log) as dump_err,
            private.open_private(restore_log) as restore_err,
        ):
            pg_dump = children.popen(
                argv, stdout=subprocess.PIPE, stderr=dump_err, env=self.endpoint.child_env()
            )
            pg_restore = children.popen(
                restore_argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=restore_err,
                env=target.child_env(),
            )
            assert pg_dump.stdout
            size = stream.into(
                pg_dump.stdout,
                pg_restore,
                check=functools.partial(_exited, pg_dump, part, dump_log),
                abort=functools.partial(_killed, pg_dump),
                failed=lambda code: restore.stopped("pg_restore", code, restore_log),
                progress=progress,
            )
        for path in (dump_log, restore_log):
            if path.stat().st_size == 0:
                path.unlink()
        flags = stream.restore_flags(creates=part.creates)
        by_hand = shlex.join(["pg_restore", *flags, "-d", into.dbname or ""])
        return stream.Part(part.name, size, None, by_hand)

    @staticmethod
    def _part_flags(part: parts.Part, snapshot: str) -> list[str]:
        return [*stream.PG_DUMP_FLAGS, f"--snapshot={snapshot}", *part.dump_flags]

    def kept_evidence(self) -> dict[str, object]:
        """For the dump's evidence until the artifact is written."""
        return {
            "artifact": ARTIFACT_HOW,
            "streamed_bytes": sum(p.bytes for p in self.kept or []),
            "written": False,
        }

    def fetch_kept(self, directory: Path, *, progress: Progress | None = None) -> list[stream.Part]:
        """The artifact: every part dumped again into `directory`, --jobs at a time, from the
        copy's snapshot (or an equal one: checks.held), with each file's size and SHA-256."""
        assert self._held and self.kept and self._tools
        tools, streamed = self._tools, {p.name: p for p in self.kept}
        with held.same_data(self.endpoint, self._held) as (snapshot, how):
            self.artifact_snapshot = how
            pool = ThreadPoolExecutor(max_workers=max(1, min(self.jobs, len(self._plan))))
            with pool, children.stopped_on_error():
                runs = [
                    pool.submit(
                        self._write_part, tools, part, snapshot, directory, streamed, progress
                    )
                    for part in self._plan
                ]
                written = [run.result() for run in runs]
        return written

    def _write_part(
        self,
        tools: pgtools.Toolset,
        part: parts.Part,
        snapshot: str,
        directory: Path,
        streamed: dict[str, stream.Part],
        progress: Progress | None,
    ) -> stream.Part:
        dest = directory / part.name
        errlog = directory.with_name(f"{directory.name}.{part.name}.pg_dump.log")
        with private.open_private(errlog) as err:
            proc = children.popen(
                self._pg_dump(tools, self._part_flags(part, snapshot)),
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.endpoint.child_env(),
            )
            assert proc.stdout
            try:
                size, sha = stream.keep(
                    proc.stdout,
                    dest,
                    release=lambda _size, _sha: _exited(proc, part, errlog),
                    progress=progress,
                )
            except BaseException:
                _killed(proc)
                raise
        errlog.unlink()
        return stream.Part(part.name, size, sha, streamed[part.name].restore)

    def remove_kept(self) -> None:
        """Release the held snapshot (idempotent). Nothing of it is on disk: stage 6's own
        failure says when the archive is missing."""
        if self._held:
            self._held.close()
        self._held, self.kept = None, None

    def restore(
        self, dump: DumpFile, target: Endpoint, *, log: Path, progress: Progress | None = None
    ) -> None:
        if self._tools is None:
            raise errors.ToolMissing("restore before dump: the psql to use is not chosen yet")
        restore.restore(dump, target, self._tools, log, progress)

    def restore_schema(self, into: Endpoint, *, target_major: int, log: Path) -> None:
        tools = self._tools_for(target_major)
        restore_argv = restore.pg_restore_argv(tools, into.conninfo(), creates=False)
        with private.open_private(log) as err:
            # One log for both: whichever error comes first is the cause.
            pg_dump = children.popen(
                self._pg_dump(tools, scratch.DUMP_FLAGS),
                stdout=subprocess.PIPE,
                stderr=err,
                env=self.endpoint.child_env(),
            )
            procs = [pg_dump]
            try:
                procs.append(
                    children.popen(
                        restore_argv,
                        stdin=pg_dump.stdout,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        env=into.child_env(),
                    )
                )
                assert pg_dump.stdout
                pg_dump.stdout.close()  # pg_restore's now: pg_dump sees it quit
                restored, dumped = procs[1].wait(), pg_dump.wait()
            finally:
                for proc in procs:  # interrupted: neither outlives the check
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        if restored or dumped:
            program = "pg_restore" if restored else "pg_dump"
            raise restore.stopped(program, restored or dumped, log)


def _exited(pg_dump: subprocess.Popen[bytes], part: parts.Part, log: Path) -> None:
    """pg_dump's output ended: whole only if it exited 0."""
    code = pg_dump.wait()
    if code != 0:
        first = restore.first_error(log)
        raise errors.DumpFailed(f"pg_dump ({part.name}) failed with exit code {code}: {first}")


def _killed(pg_dump: subprocess.Popen[bytes]) -> None:
    if pg_dump.poll() is None:
        pg_dump.kill()
    pg_dump.wait()


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace").strip()
    return text.splitlines()[-1] if text else "no message"
