"""`python -m bench --kubernetes`: the same three measurements with the source in a pod.

The test cluster (tests/cluster) runs StackBlitz-like PostgreSQL 15 in namespace sbm-bench; the
target is a server on this host that pods reach at the bridge address, as a managed server is
reached from a cluster. Measured:
1. the seed procedure's commands: `kubectl exec pod -- pg_dump --if-exists -xcCO | gzip > f`,
   `kubectl cp f pod:/tmp/...`, `kubectl exec pod -- sh -c 'zcat f | psql -h target'` (without
   the seed's -t: no TTY can be had here, and it corrupts dumps);
2. the runbook in Kubernetes mode, as an operator runs it;
3. the floor, inside the pod: the schema, then `psql -c 'COPY t TO STDOUT' | psql -h target -c
   'COPY t FROM STDIN'` two tables at a time, then the indexes and constraints.
With --repeat N the runbook and the floor run N times each, alternating, and the medians are
reported (the seed procedure, three times slower, once). The runbook's outage is its evidence's:
from the dump's start to passed verification (the bench stops no app); the archive, dumped again
from the copy's snapshot through kubectl exec (stage 6), comes after it and is reported apart.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from bench.run import REPO, _drop, _timed, runbook, summarize
from checks import data, kube
from fixtures import pgserver
from fixtures import stackblitz_namespace as sbns
from fixtures.kots_sample import kots_config_values

KUBECONFIG = Path("/var/lib/stackblitz-migrate-cluster/admin.kubeconfig")
HOST_IP = "10.244.0.1"  # tests/cluster/env.sh: the bridge, where pods reach this host
POD_CIDR = "10.244.0.0/24"
NAMESPACE = "sbm-bench"
DB = sbns.DATABASE
# The target's password arrives on stdin: `read` keeps it out of every argv and the audit log.
_LOGIN = 'IFS= read -r PGPASSWORD; export PGPASSWORD; T="host=$1 port=$2 user=$3"; shift 3; '


def measure(
    size_gb: float,
    target_version: int,
    repeat: int = 1,
    *,
    with_seed: bool = True,
    verify_during_copy: bool = False,
) -> dict[str, object]:
    up = subprocess.run([str(REPO / "tests/cluster/up")], capture_output=True, text=True)
    if up.returncode != 0:
        raise SystemExit(f"bench: tests/cluster/up failed: {up.stdout[-1500:]}{up.stderr[-1500:]}")
    cluster = kube.Kube(KUBECONFIG)
    install = sbns.Install(
        NAMESPACE,
        secrets.token_urlsafe(12),
        kots_configs={1: kots_config_values("bench-key-" + secrets.token_hex(8))},
        kots_versions=[
            {"versionLabel": "1.0.0", "sequence": 1, "status": "deployed", "deployedAt": "x"}
        ],
    )
    sbns.delete(cluster, NAMESPACE)
    subprocess.run(
        cluster.kubectl("wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=120s"),
        capture_output=True,
        check=False,
    )
    sbns.deploy(cluster, install, app=False)
    try:
        size = int(size_gb * 1e9)
        _timed(
            f"generate {size_gb} GB in the pod",
            lambda: sbns.seed(cluster, install, size_bytes=size),
        )
        pod = kube.find_postgres_pod(cluster, namespace=NAMESPACE, pod_name=None)
        with (
            pgserver.running_server(
                target_version, also_listen_on=HOST_IP, allow_cidr=POD_CIDR
            ) as server,
            tempfile.TemporaryDirectory(prefix="sbm-bench-kube-") as tmp,
        ):
            dst = pgserver.Server(
                HOST_IP, server.port, server.user, server.password, target_version
            )
            work = Path(tmp)
            db_bytes, tables = _source_facts(cluster, pod, install)
            seed = _seed_procedure(cluster, pod, dst, work) if with_seed else None
            _drop(dst)
            source_args = ["--kubeconfig", str(KUBECONFIG), "--namespace", NAMESPACE]
            path = f"{sbns.STAND_IN_BIN}{os.pathsep}{os.environ['PATH']}"  # kubectl kots
            books, bares = [], []
            for _ in range(repeat):
                _drop(dst)
                options = ("--verify-during-copy",) * verify_during_copy
                books.append(runbook(source_args, dst, work, env={"PATH": path}, extra=options))
                _drop(dst)
                bares.append(_timed("floor in the pod", lambda: _floor(cluster, pod, dst, tables)))
    finally:
        sbns.delete(cluster, NAMESPACE)
    books.sort(key=lambda b: b["outage_s"])
    book, bare = books[len(books) // 2], sorted(bares)[len(bares) // 2]
    result = summarize(size_gb, db_bytes, seed, book, bare)
    result.update(mode="kubernetes", source=15, target=target_version, repeat=repeat)
    result.update(in_pod_floor(seed, books, sorted(bares)))
    return result


def in_pod_floor(
    seed: dict[str, float] | None, books: list[dict[str, float]], bares: list[float]
) -> dict[str, object]:
    """The issue's Kubernetes figures, medians of the runs given (each list sorted): the outage
    (dump to verified) over the in-pod floor, and the seed's exec/cp/exec over the outage."""
    book, bare = books[len(books) // 2], bares[len(bares) // 2]
    seed_total = seed["dump"] + seed["restore"] if seed else None
    figures = {
        "in_pod_floor_s": round(bare, 1),
        "outage_s": round(book["outage_s"], 1),
        "outage_over_in_pod_floor": round(book["outage_s"] / bare, 2),
        "seed_over_outage": round(seed_total / book["outage_s"], 2) if seed_total else None,
        "artifact_fetch_after_outage_s": round(book["artifact"], 1),
        "outage_samples_s": [round(b["outage_s"], 1) for b in books],
        "in_pod_floor_samples_s": [round(b, 1) for b in bares],
    }
    print(
        f"bench: kubernetes medians of {len(books)}: outage {figures['outage_s']} s (dump "
        f"{book['dump']:.1f} + restore {book['restore']:.1f} + verify {book['verify']:.1f}), "
        f"in-pod floor {figures['in_pod_floor_s']} s: outage / floor "
        f"{figures['outage_over_in_pod_floor']}, seed / outage {figures['seed_over_outage']}; "
        f"the archive dumped after the outage in {figures['artifact_fetch_after_outage_s']} s",
        flush=True,
    )
    return figures


def _source_facts(
    cluster: kube.Kube, pod: kube.PostgresPod, install: sbns.Install
) -> tuple[int, list[str]]:
    forward = kube.PortForward(cluster, pod)
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=forward.port,
            user=sbns.USER,
            password=install.password,
            dbname=DB,
        ) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            tables = [
                sql.Identifier(s, n).as_string(conn)
                for s, n, kind in data.tables(conn)
                if kind == "table"
            ]
    finally:
        forward.close()
    return int(size[0]) if size else 0, tables


def _in_pod(
    cluster: kube.Kube, pod: kube.PostgresPod, script: str, dst: pgserver.Server, *args: str
) -> None:
    argv = ["sh", "-c", _LOGIN + script, "sh", dst.host, str(dst.port), dst.user, *args]
    subprocess.run(
        kube.exec_argv(cluster, pod, argv, stdin=True),
        input=(dst.password + "\n").encode(),
        stdout=subprocess.DEVNULL,
        check=True,
    )


def _seed_procedure(
    cluster: kube.Kube, pod: kube.PostgresPod, dst: pgserver.Server, work: Path
) -> dict[str, float]:
    dump = work / "stackblitz_dump.sql.gz"
    in_pod = "/tmp/stackblitz_dump.sql.gz"

    def dump_step() -> None:
        with dump.open("wb") as out:
            pg_dump = subprocess.Popen(
                kube.exec_argv(
                    cluster,
                    pod,
                    ["pg_dump", "--if-exists", "-xcCO", "-U", sbns.USER, "-d", DB],
                    stdin=False,
                ),
                stdout=subprocess.PIPE,
            )
            gzip = subprocess.run(["gzip"], stdin=pg_dump.stdout, stdout=out, check=True)
            assert pg_dump.wait() == 0 and gzip.returncode == 0

    def restore_step() -> None:
        target = f"{pod.namespace}/{pod.name}:{in_pod}"
        subprocess.run(
            cluster.kubectl("cp", str(dump), target, "-c", pod.container),
            check=True,
            capture_output=True,
        )
        _in_pod(cluster, pod, f'zcat {in_pod} | psql -q -d "$T dbname=postgres"', dst)
        _in_pod(cluster, pod, f"rm -f {in_pod}", dst)

    return {
        "dump": _timed("seed dump (kubectl exec pg_dump | gzip)", dump_step),
        "restore": _timed("seed restore (kubectl cp, kubectl exec zcat | psql)", restore_step),
        "bytes": dump.stat().st_size,
    }


def _floor(
    cluster: kube.Kube, pod: kube.PostgresPod, dst: pgserver.Server, tables: list[str]
) -> None:
    def section(name: str) -> None:
        create = "-C" if name == "pre-data" else ""
        dbname = "postgres" if name == "pre-data" else DB
        script = (
            f'pg_dump --section={name} -xO {create} -U "$POSTGRES_USER" -d {DB} | '
            f'psql -q -v ON_ERROR_STOP=1 -d "$T dbname={dbname}"'
        )
        _in_pod(cluster, pod, script, dst)

    def copy(table: str) -> None:
        script = (
            f'psql -X -q -U "$POSTGRES_USER" -d {DB} -c "COPY $1 TO STDOUT" | '
            f'psql -X -q -v ON_ERROR_STOP=1 -d "$T dbname={DB}" -c "COPY $1 FROM STDIN"'
        )
        _in_pod(cluster, pod, script, dst, table)

    section("pre-data")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(copy, tables))
    section("post-data")
