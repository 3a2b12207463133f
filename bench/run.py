"""Times, in one run on the same generated source and a fresh target database each time:
1. the seed procedure exactly as documented (direct mode): `pg_dump --if-exists -xcCO | gzip > f`,
   then `zcat f | psql -d postgres`;
2. the runbook's dump and restore (`pytest runbook/`, read from its evidence);
3. the runbook's verification (the same run's verify stage);
4. the floor: the schema, then a bare `COPY TO STDOUT | COPY FROM STDIN` of every table, two at
   a time, then the indexes and constraints: no files, no compression, no verification;
5. with --peers, `pgcopydb clone` (bench/peers.py) into a fresh target database.
Prints the times, the runbook's outage (dump start to passed verification, from its evidence) and
how much of its verification overlapped the copy, the ratios seed / runbook, outage / floor and
outage / pgcopydb, the runbook process tree's peak RSS and the dump's bytes; --json writes the
same to a file. With --repeat N, the runbook, the floor and the peer run N times each,
alternating, and the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from bench import peers
from bench.levers import directory_format, plain_pipe
from checks import data, pgtools
from fixtures import pgserver, sample_db

REPO = Path(__file__).resolve().parent.parent
DB = sample_db.DATABASE


def _timed(label: str, fn) -> float:  # type: ignore[no-untyped-def]
    print(f"bench: {label} ...", flush=True)
    start = time.monotonic()
    fn()
    seconds = time.monotonic() - start
    print(f"bench: {label}: {seconds:.1f} s", flush=True)
    return seconds


def _env(server: pgserver.Server) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": server.password}


def _drop(target: pgserver.Server) -> None:
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute("CHECKPOINT")


def seed_procedure(
    src: pgserver.Server, dst: pgserver.Server, tools: pgtools.Toolset, work: Path
) -> dict[str, float]:
    """The documented commands, as pipelines of the same programs (no shell)."""
    dump = work / "stackblitz_dump.sql.gz"

    def dump_step() -> None:
        with dump.open("wb") as out:
            pg_dump = subprocess.Popen(
                [tools.path("pg_dump"), "--if-exists", "-xcCO", "-d", src.dsn(DB)],
                stdout=subprocess.PIPE,
                env=_env(src),
            )
            gzip = subprocess.run(["gzip"], stdin=pg_dump.stdout, stdout=out, check=True)
            assert pg_dump.wait() == 0 and gzip.returncode == 0

    def restore_step() -> None:
        zcat = subprocess.Popen(["zcat", str(dump)], stdout=subprocess.PIPE)
        subprocess.run(
            [tools.path("psql"), "-q", "-d", dst.dsn("postgres")],
            stdin=zcat.stdout,
            stdout=subprocess.DEVNULL,
            env=_env(dst),
            check=True,
        )
        assert zcat.wait() == 0

    return {
        "dump": _timed("seed dump", dump_step),
        "restore": _timed("seed restore", restore_step),
        "bytes": dump.stat().st_size,
    }


def password_file(work: Path, name: str, password: str) -> Path:
    path = work / name
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def direct_source(src: pgserver.Server, work: Path) -> list[str]:
    """The runbook's options for a source this host reaches."""
    return [
        "--source-dsn",
        f"host={src.host} port={src.port} user={src.user}",
        "--source-password-file",
        str(password_file(work, "source-pw", src.password)),
    ]


def runbook(
    source_args: list[str],
    dst: pgserver.Server,
    work: Path,
    method: str = "stream",
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, float]:
    """The real runbook, as an operator runs it; its stage timings come from its evidence."""
    reports = work / f"reports-{method}"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "runbook/",
        "-q",
        "-p",
        "no:randomly",
        *source_args,
        "--target-host",
        dst.host,
        "--target-port",
        str(dst.port),
        "--target-user",
        dst.user,
        "--target-password-file",
        str(password_file(work, "target-pw", dst.password)),
        "--workdir",
        str(work),
        "--reports-dir",
        str(reports),
        "--method",
        method,
        *extra,
    ]
    print(f"bench: runbook --method {method} ...", flush=True)
    log = work / f"runbook-{method}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        # wait4, not wait: its rusage gives the peak RSS of the largest process in the tree
        # (pytest's Python, pg_dump, psql), which is what "memory stays flat" is about.
        _, _status, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
    output = log.read_bytes()
    evidence = json.loads((reports / "evidence.json").read_text())
    if not evidence["verified"]:
        raise SystemExit(f"bench: the runbook did not verify:\n{output.decode()[-3000:]}")
    stages = {s["name"]: s["seconds"] for s in evidence["stages"]}
    rss = usage.ru_maxrss  # KiB on Linux
    outage = evidence["outage"]["seconds"]
    overlap = (evidence.get("verification") or {}).get("overlap")
    print(
        f"bench: runbook --method {method}: dump {stages['dump']:.1f} s, "
        f"restore {stages['restore']:.1f} s, verify {stages['verify']:.1f} s; "
        f"outage {outage:.1f} s (verification overlap {overlap})",
        flush=True,
    )
    artifact = Path(evidence["dump"]["path"])  # measured; at 4 GB the next run needs the room
    if artifact.is_dir():
        shutil.rmtree(artifact)
    else:
        artifact.unlink()
    return {
        "dump": stages["dump"],
        "restore": stages["restore"],
        "verify": stages["verify"],
        "outage_s": outage,
        "verification": evidence.get("verification"),
        "artifact": stages.get("artifact", 0.0),  # stage 6: the archive, after the outage
        "bytes": evidence["dump"]["bytes"],
        "peak_rss_mb": round(rss / 1024, 1),
    }


def floor(src: pgserver.Server, dst: pgserver.Server, tools: pgtools.Toolset) -> float:
    """Schema, parallel bare COPY pipes, then indexes and constraints."""

    def section(name: str, dbname: str) -> None:
        pg_dump = subprocess.Popen(
            [
                tools.path("pg_dump"),
                f"--section={name}",
                "-xO",
                *(["-C"] if name == "pre-data" else []),
                "-d",
                src.dsn(DB),
            ],
            stdout=subprocess.PIPE,
            env=_env(src),
        )
        subprocess.run(
            [tools.path("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", dst.dsn(dbname)],
            stdin=pg_dump.stdout,
            stdout=subprocess.DEVNULL,
            env=_env(dst),
            check=True,
        )
        assert pg_dump.wait() == 0

    with psycopg.connect(**src.connect_kwargs(DB)) as conn:
        tables = [
            f"{sql.Identifier(s, n).as_string(conn)}"
            for s, n, kind in data.tables(conn)
            if kind == "table"
        ]

    def copy(table: str) -> None:
        out = subprocess.Popen(
            [tools.path("psql"), "-X", "-q", "-d", src.dsn(DB), "-c", f"COPY {table} TO STDOUT"],
            stdout=subprocess.PIPE,
            env=_env(src),
        )
        subprocess.run(
            [
                tools.path("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dst.dsn(DB),
                "-c",
                f"COPY {table} FROM STDIN",
            ],
            stdin=out.stdout,
            stdout=subprocess.DEVNULL,
            env=_env(dst),
            check=True,
        )
        assert out.wait() == 0

    def run() -> None:
        section("pre-data", "postgres")
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(copy, tables))
        section("post-data", DB)

    return _timed("floor", run)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--source-version", type=int, default=15)
    p.add_argument("--target-version", type=int, default=18)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the runbook and the floor this many times each, alternating, and report the "
        "median of each (this machine's timings vary by 10-20%% from run to run)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 2,
        help="the runbook's --jobs (and pgcopydb's table and index jobs); default: the cores",
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help="also time `pgcopydb clone` on the same source into a fresh target, alternating "
        "with the runbook and the floor (scripts/peers installs it)",
    )
    p.add_argument(
        "--verify-during-copy",
        action="store_true",
        help="the runbook's --verify-during-copy: verification's digests taken while copying",
    )
    p.add_argument(
        "--no-seed",
        action="store_true",
        help="skip the seed procedure's single timing (its dump alone takes ~10 minutes at 4 GB); "
        "the seed figures are then null",
    )
    p.add_argument(
        "--levers",
        action="store_true",
        help="also time the levers one by one: the runbook's --method seed, a bare "
        "pg_dump | psql, and pg_dump -Fd -j2 with pg_restore -j2",
    )
    p.add_argument(
        "--kubernetes",
        action="store_true",
        help="measure Kubernetes mode on the test cluster (tests/cluster) instead: the source "
        "is a pod, the target a server on this host that pods reach",
    )
    a = p.parse_args(argv)
    if a.kubernetes:
        from bench import kubernetes

        result = kubernetes.measure(
            a.size_gb,
            a.target_version,
            max(a.repeat, 1),
            with_seed=not a.no_seed,
            verify_during_copy=a.verify_during_copy,
        )
    else:
        if a.peers and peers.available():
            raise SystemExit(f"bench: --peers: {peers.available()}")
        result = _measure_direct(
            a.size_gb,
            a.source_version,
            a.target_version,
            a.levers,
            max(a.repeat, 1),
            jobs=max(a.jobs, 1),
            with_peers=a.peers,
            with_seed=not a.no_seed,
            verify_during_copy=a.verify_during_copy,
        )
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _measure_direct(
    size_gb: float,
    source_version: int,
    target_version: int,
    levers: bool,
    repeat: int,
    *,
    jobs: int,
    with_peers: bool,
    with_seed: bool = True,
    verify_during_copy: bool = False,
) -> dict[str, object]:
    tools = pgtools.for_migration(source_version, target_version)
    with (
        pgserver.running_server(source_version) as src,
        pgserver.running_server(target_version) as dst,
        tempfile.TemporaryDirectory(prefix="sbm-bench-") as tmp,
    ):
        work = Path(tmp)
        with psycopg.connect(**src.connect_kwargs(), autocommit=True) as admin:
            sample_db.create_database(admin, DB)
        size = int(size_gb * 1e9)
        with psycopg.connect(**src.connect_kwargs(DB)) as conn:
            _timed(f"generate {size_gb} GB", lambda: sample_db.seed(conn, size_bytes=size))
        with psycopg.connect(**src.connect_kwargs(DB), autocommit=True) as conn:
            # Settled, as a production database is: autovacuum's first ANALYZE of the freshly
            # loaded tables would otherwise write on the source during a timed run.
            _timed("VACUUM ANALYZE the source", lambda: conn.execute("VACUUM ANALYZE"))
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        seed = seed_procedure(src, dst, tools, work) if with_seed else None
        books, bares, peer_runs = [], [], []
        for i in range(repeat):
            print(f"bench: round {i + 1} of {repeat}: {_load()}", flush=True)
            _drop(dst)
            options = ("--jobs", str(jobs), *(["--verify-during-copy"] * verify_during_copy))
            books.append(runbook(direct_source(src, work), dst, work, extra=options))
            _drop(dst)
            bares.append(floor(src, dst, tools))
            if with_peers:
                _drop(dst)
                peer_runs.append(peers.pgcopydb_clone(src, dst, work, jobs))
        _drop(dst)
        books.sort(key=lambda b: b["outage_s"])
        book, bare = books[len(books) // 2], sorted(bares)[len(bares) // 2]
        samples: dict[str, object] = {
            "jobs": jobs,
            "verify_during_copy": verify_during_copy,
            "runbook_totals_s": [round(b["dump"] + b["restore"], 1) for b in books],
            "outage_samples_s": [b["outage_s"] for b in books],
            "floor_samples_s": [round(b, 1) for b in sorted(bares)],
            "load_average": _load(),
        }
        if peer_runs:
            peer_runs.sort(key=lambda r: float(r["seconds"]))  # type: ignore[arg-type]
            peer = peer_runs[len(peer_runs) // 2]
            samples["pgcopydb"] = {
                **peer,
                "samples_s": [r["seconds"] for r in peer_runs],
            }
            samples["outage_over_pgcopydb"] = round(book["outage_s"] / float(peer["seconds"]), 2)  # type: ignore[arg-type]
        extra: dict[str, object] = {}
        if levers:
            _drop(dst)
            seed_method = runbook(direct_source(src, work), dst, work, method="seed")
            _drop(dst)
            extra["runbook_method_seed"] = {
                **{k: seed_method[k] for k in ("dump", "restore", "verify", "bytes")},
                "total_s": round(seed_method["dump"] + seed_method["restore"], 1),
            }
            extra["pg_dump_pipe_psql"] = plain_pipe(src, dst, tools, _timed)
            _drop(dst)
            extra["directory_format_j2"] = directory_format(src, dst, tools, work, _timed)
            _drop(dst)
    result = summarize(size_gb, db_bytes, seed, book, bare)
    result.update(source=source_version, target=target_version, repeat=repeat, **samples)
    print(_figures(result), flush=True)
    if extra:
        result["levers"] = extra
    return result


def summarize(
    size_gb: float,
    db_bytes: int,
    seed: dict[str, float] | None,
    book: dict[str, float],
    bare: float,
) -> dict[str, object]:
    """The figures the issue asks for, from the three measurements (the seed's: None when not
    timed)."""
    book_total = book["dump"] + book["restore"]
    seed_total = seed["dump"] + seed["restore"] if seed else None
    return {
        "size_gb": size_gb,
        "database_bytes": db_bytes,
        "seed": seed
        and {
            "dump_s": round(seed["dump"], 1),
            "restore_s": round(seed["restore"], 1),
            "total_s": round(seed_total or 0, 1),
            "artifact_bytes": seed["bytes"],
        },
        "runbook": {
            "dump_s": book["dump"],
            "restore_s": book["restore"],
            "total_s": round(book_total, 1),
            "verify_s": book["verify"],
            "artifact_bytes": book["bytes"],
            "peak_rss_mb": book["peak_rss_mb"],
            "verification": book.get("verification"),  # the evidence's: what overlapped
            # --method stream: stage 6, the archive written after the outage
            "artifact_after_outage_s": book.get("artifact"),
        },
        "floor_s": round(bare, 1),
        "seed_over_runbook": round(seed_total / book_total, 2) if seed_total else None,
        "runbook_over_floor": round(book_total / bare, 2),
        "verify_over_dump_restore": round(book["verify"] / book_total, 2),
        **_outage(book, bare),
    }


def _outage(book: dict[str, float], bare: float) -> dict[str, object]:
    """The outage (dump start to passed verification) and how much verification overlapped."""
    if "outage_s" not in book:
        return {}
    verification = book.get("verification") or {}
    return {
        "outage_s": book["outage_s"],
        "outage_over_floor": round(book["outage_s"] / bare, 2),
        "verification_overlap": verification.get("overlap"),  # type: ignore[union-attr]
        "verification_final_check_s": verification.get("final_check_seconds"),  # type: ignore[union-attr]
    }


def _figures(result: dict[str, object]) -> str:
    """The figures the issue asks for, on a few lines above the JSON."""
    runbook_figures = result["runbook"]
    lines = [
        f"bench: outage {result.get('outage_s')} s = {result.get('outage_over_floor')} x the "
        f"floor ({result['floor_s']} s); verification overlap {result.get('verification_overlap')}"
        f", final check {result.get('verification_final_check_s')} s",
        f"bench: peak RSS {runbook_figures['peak_rss_mb']} MB; seed / runbook "  # type: ignore[index]
        f"{result['seed_over_runbook']}; the archive written after the outage in "
        f"{runbook_figures['artifact_after_outage_s']} s",  # type: ignore[index]
    ]
    if "pgcopydb" in result:
        lines.append(
            f"bench: pgcopydb clone {result['pgcopydb']['seconds']} s; outage / pgcopydb "  # type: ignore[index]
            f"{result['outage_over_pgcopydb']}"
        )
    return "\n".join(lines)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"
