"""The direct source: a database the operator's host reaches (e.g. through a port-forward)."""

from __future__ import annotations

import functools
import shlex
import subprocess
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

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
    tablecopy,
)
from checks import dump as dumping
from checks.dumpfile import DumpFile
from checks.endpoint import Endpoint
from checks.progress import Progress
from checks.tablecopy import Slice

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
    _plan: list[parts.Part] = field(default_factory=list, repr=False)  # the artifact's
    _binary_copy: str = field(default="", repr=False)  # the tables checks.tablecopy copied

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
        """checks.tablecopy's steps: pg_dump into pg_restore for the schema, the indexes and
        the smaller tables' data, binary COPY for the larger tables; all from one snapshot,
        which stays held for the artifact (`fetch_kept`, after verification: checks.held); no
        file is written here. `early` digests both sides while they run (checks.overlap)."""
        tools = self._tools_for(target_major)
        self.remove_kept()
        done: list[stream.Part] = []
        snapshot = held.export(self.endpoint)
        try:
            if early:
                early.start_source(self.connect, snapshot.name)
            source_major = snapshot.conn.info.server_version // 10000
            steps = tablecopy.steps(snapshot.conn, self.jobs, source_major)
            slices_left = Counter(p.table for step in steps for p in step if isinstance(p, Slice))
            for step in steps:
                # On any error or signal here, the children stop before the pool waits for
                # the threads that feed them.
                pool = ThreadPoolExecutor(max_workers=min(self.jobs, len(step)))
                with pool, children.stopped_on_error():
                    runs = {
                        pool.submit(
                            self._copy_slice if isinstance(part, Slice) else self._stream_part,
                            tools,
                            part,  # type: ignore[arg-type]
                            snapshot.name,
                            target,
                            log,
                            progress,
                        ): part
                        for part in step
                    }
                    for run in as_completed(runs):
                        run.result()
                        part = runs[run]
                        if isinstance(part, Slice):
                            slices_left[part.table] -= 1
                            if early and slices_left[part.table] == 0:
                                early.loaded_tables([part.table])
                        elif early and part.data:
                            early.loaded(part)
                    done += [run.result() for run in runs]  # in the plan's order
            if early:
                early.all_loaded()
            plan = parts.plan(snapshot.conn, self.jobs)  # the artifact's: pg_dump's parts
        except BaseException:
            snapshot.close()
            if early:
                early.close()  # before the copy's cleanup drops what it created
            raise
        self._held = snapshot
        self._plan = [part for step in plan for part in step]
        self._binary_copy = _binary_copy(steps)
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
        into = target.with_dbname(self._restores_into(part))
        restore_argv = restore.pg_restore_argv(tools, into.conninfo(), creates=part.creates)
        dump_log = log.with_name(f"{log.name}.{part.name}.pg_dump.log")
        restore_log = log.with_name(f"{log.name}.{part.name}.log")
        size = _relay(
            (argv, self.endpoint.child_env(), dump_log),
            (restore_argv, target.child_env(), restore_log),
            check=lambda pg_dump, _tail: _exited(pg_dump, part, dump_log),
            failed="pg_restore",
            progress=progress,
        )
        return stream.Part(part.name, size, None, self._by_hand(part))

    def _restores_into(self, part: parts.Part) -> str:
        """The database a part's pg_restore connects to: the one that creates it starts in the
        maintenance database, as the seed's psql does."""
        return restore.MAINTENANCE_DB if part.creates else str(self.endpoint.dbname)

    def _by_hand(self, part: parts.Part) -> str:
        """The pg_restore command that restores the part's file by hand."""
        flags = stream.restore_flags(creates=part.creates)
        return shlex.join(["pg_restore", *flags, "-d", self._restores_into(part)])

    def _copy_slice(
        self,
        tools: pgtools.Toolset,
        part: Slice,
        snapshot: str,
        target: Endpoint,
        log: Path,
        progress: Progress | None,
    ) -> stream.Part:
        """One slice: the source's psql in a transaction that imported the snapshot, into the
        target's psql, relayed and checked as checks.tablecopy says."""
        psql = tools.path("psql")
        quiet = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        begin = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
        source_argv = [
            *quiet,
            "-d",
            self.endpoint.conninfo(),
            "-c",
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            "-c",
            begin.as_string(),
            "-c",
            part.copy_out,
            "-c",
            "COMMIT",
        ]
        into = target.with_dbname(str(self.endpoint.dbname))
        target_argv = [*quiet, "-d", into.conninfo(), "-c", part.copy_in]
        out_log = log.with_name(f"{log.name}.{part.name}.source.log")
        in_log = log.with_name(f"{log.name}.{part.name}.log")
        size = _relay(
            (source_argv, tablecopy.session_env(self.endpoint.child_env(), part.encoding), out_log),
            (target_argv, tablecopy.session_env(target.child_env(), part.encoding), in_log),
            check=lambda psql, tail: _copied(psql, part, out_log, tail),
            failed="psql (the target's COPY)",
            progress=progress,
            copy_rows_per_byte=part.rows / max(part.bytes, 1),
        )
        return stream.Part(part.name, size, None, "binary COPY (the artifact holds these rows)")

    @staticmethod
    def _part_flags(part: parts.Part, snapshot: str) -> list[str]:
        return [*stream.PG_DUMP_FLAGS, f"--snapshot={snapshot}", *part.dump_flags]

    def kept_evidence(self) -> dict[str, object]:
        """For the dump's evidence until the artifact is written."""
        return {
            "artifact": ARTIFACT_HOW,
            "streamed_bytes": sum(p.bytes for p in self.kept or []),
            "binary_copy": self._binary_copy or "none (every table through pg_dump)",
            "written": False,
        }

    def fetch_kept(self, directory: Path, *, progress: Progress | None = None) -> list[stream.Part]:
        """The artifact: every part dumped again into `directory`, --jobs at a time, from the
        copy's snapshot (or an equal one: checks.held), with each file's size and SHA-256."""
        assert self._held and self.kept and self._tools
        tools = self._tools
        with held.same_data(self.endpoint, self._held) as (snapshot, how):
            self.artifact_snapshot = how
            pool = ThreadPoolExecutor(max_workers=max(1, min(self.jobs, len(self._plan))))
            with pool, children.stopped_on_error():
                runs = [
                    pool.submit(self._write_part, tools, part, snapshot, directory, progress)
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
        return stream.Part(part.name, size, sha, self._by_hand(part))

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


Program = tuple[list[str], dict[str, str], Path]  # argv, environment, its stderr's log


def _relay(
    reader: Program,
    writer: Program,
    *,
    check: Callable[[subprocess.Popen[bytes], bytes], None],
    failed: str,
    progress: Progress | None,
    copy_rows_per_byte: float | None = None,
) -> int:
    """`reader`'s output into `writer` (checks.stream.into); `check(reader, last bytes)` proves
    it whole, `failed` names the writer. Logs that stayed empty are removed."""
    (reader_argv, reader_env, reader_log), (writer_argv, writer_env, writer_log) = reader, writer
    with (
        private.open_private(reader_log) as reader_err,
        private.open_private(writer_log) as writer_err,
    ):
        source = children.popen(
            reader_argv, stdout=subprocess.PIPE, stderr=reader_err, env=reader_env
        )
        sink = children.popen(
            writer_argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=writer_err,
            env=writer_env,
        )
        assert source.stdout
        size = stream.into(
            source.stdout,
            sink,
            check=functools.partial(check, source),
            abort=functools.partial(_killed, source),
            failed=lambda code: restore.stopped(failed, code, writer_log),
            progress=progress,
            copy_rows_per_byte=copy_rows_per_byte,
        )
    for path in (reader_log, writer_log):
        if path.stat().st_size == 0:
            path.unlink()
    return size


def _exited(pg_dump: subprocess.Popen[bytes], part: parts.Part, log: Path) -> None:
    """pg_dump's output ended: whole only if it exited 0 (the archive delimits itself)."""
    code = pg_dump.wait()
    if code != 0:
        first = restore.first_error(log)
        raise errors.DumpFailed(f"pg_dump ({part.name}) failed with exit code {code}: {first}")


def _copied(psql: subprocess.Popen[bytes], part: Slice, log: Path, tail: bytes) -> None:
    """The source's COPY ended: whole only if its psql exited 0 after the format's end mark."""
    code = psql.wait()
    if code != 0:
        first = restore.first_error(log)
        raise errors.DumpFailed(
            f"the source's COPY ({part.name}) failed with exit code {code}: {first}"
        )
    if tail != tablecopy.END_MARK:
        raise errors.DumpFailed(
            f"the source's COPY ({part.name}) ended without its end mark: the stream was cut"
        )


def _binary_copy(steps: list[list[parts.Part | Slice]]) -> str:
    """The tables copied by binary COPY, for the evidence: "public.t in 3 block ranges, ..."."""
    slices = [p for step in steps for p in step if isinstance(p, Slice)]
    return ", ".join(
        ".".join(s.table) + (f" in {s.of} block ranges" if s.of > 1 else "")
        for s in sorted(slices, key=lambda s: s.table)
        if s.index == 1
    )


def _killed(pg_dump: subprocess.Popen[bytes]) -> None:
    if pg_dump.poll() is None:
        pg_dump.kill()
    pg_dump.wait()


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace").strip()
    return text.splitlines()[-1] if text else "no message"
