"""The one-file release as an operator runs it: built by scripts/build-release, checked with its
checksum file, run on this host and on Debian 11 (tests/debian11.py: Debian's own Python 3.9, no
venv, no pip), where its first run unpacks with no network and a Kubernetes-mode migration from
there, with kubectl and the KOTS stand-in (fixtures/bin/kubectl-kots) copied in, verifies."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from checks import kube
from fixtures import pgserver
from fixtures import stackblitz_namespace as sbns
from fixtures.kots_sample import kots_config_values
from tests import clusters, debian11

REPO = Path(__file__).resolve().parent.parent
PEX = "/root/stackblitz-migrate.pex"  # where the operator copied it, in the chroot
# A stray pytest configuration and conftest.py where the operator runs it: neither may count.
STRAY = {
    "pytest.ini": "[pytest]\naddopts = --no-such-option\n",
    "conftest.py": "raise SystemExit('the conftest.py of the current directory was loaded')\n",
}


@pytest.fixture(scope="session")
def release_file() -> Path:
    """dist/stackblitz-migrate.pex of this tree (rebuilt only when its files changed)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "build-release")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return REPO / done.stdout.strip().splitlines()[-1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evidence(reports: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """The one run's reports directory under `reports` and its evidence.json."""
    (run,) = reports.iterdir()
    return run, json.loads((run / "evidence.json").read_text())


def test_checksum_file_verifies_the_release(release_file: Path, tmp_path: Path) -> None:
    """The README's check: `sha256sum -c` beside the copied file; one changed byte fails it."""
    copy = tmp_path / release_file.name
    shutil.copyfile(release_file, copy)
    shutil.copyfile(release_file.with_name(release_file.name + ".sha256"), tmp_path / "sums")
    check = ["sha256sum", "-c", "sums"]
    ok = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and f"{copy.name}: OK" in ok.stdout, ok.stdout + ok.stderr
    with copy.open("r+b") as f:
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    bad = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and f"{copy.name}: FAILED" in bad.stdout


def test_release_holds_only_the_runbook_and_runtime_wheels(release_file: Path) -> None:
    names = zipfile.ZipFile(release_file).namelist()
    assert "runbook/stage_1_preflight.py" in names and "release.json" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "kind/", "scripts/"))]
    wheels = {n.split("/")[1].split("-")[0].lower() for n in names if n.startswith(".deps/")}
    assert {"pytest", "pytest_html", "pytest_kind", "psycopg_binary", "kubernetes"} <= wheels
    assert not wheels & {"testcontainers", "ruff", "pex", "docker", "aiohttp", "pydantic"}
    for py in ("39", "310", "311", "312", "313"):
        for arch in ("x86_64", "aarch64"):
            wheel = [n for n in names if n.startswith(".deps/psycopg_binary-") and f"-cp{py}-" in n]
            assert [n for n in wheel if arch in n], f"no psycopg-binary for cp{py} {arch}"


def test_rehearsal_from_the_release_file_writes_evidence_here(
    release_file: Path, tmp_path: Path
) -> None:
    """On this host: run from another directory, the release is `pytest runbook/`: the same
    exit status, the evidence in the current directory's reports/, naming the release file."""
    here = tmp_path / "operator"
    here.mkdir()
    for name, text in STRAY.items():
        (here / name).write_text(text)
    done = _run(release_file, here, tmp_path, "--rehearsal", "--change-id", "CHG-REL-1")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    run, doc = _evidence(here / "reports")
    assert doc["verified"] is True and doc["outcome"]["exit_status"] == 0
    assert {p.name for p in run.iterdir()} >= {"junit.xml", "report.html", "SHA256SUMS"}
    tool = doc["identity"]["tool"]
    assert tool["release_file"] == f"{release_file} sha256:{_sha256(release_file)}"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert tool["commit"].startswith(head.stdout.strip())
    assert "release file" in (run / "report.html").read_text()
    # a bad option: pytest's usage status and one line, as from a checkout
    bad = _run(release_file, here, tmp_path, "--target-host", "db.example", "--method", "nope")
    assert bad.returncode == 4, bad.stdout + bad.stderr
    assert "--method 'nope': use one of stream, seed" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    # a rehearsal that cannot start: the runbook's own "not done" status, 6
    missing = _run(release_file, here, tmp_path, "--rehearsal", "--rehearsal-target-version", "9")
    assert missing.returncode == 6, missing.stdout + missing.stderr
    assert "the rehearsal cannot start here: PostgreSQL 9" in missing.stdout


def _run(release: Path, cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(release), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PEX_ROOT": str(home / "pex")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def debian(release_file: Path, tmp_path_factory: pytest.TempPathFactory) -> debian11.Chroot:
    """Debian 11 with the release copied in, and its first run (unpacking into ~/.cache/pex)
    done with no network: nothing to fetch. It runs on Debian's python3 (3.9), in a virtualenv
    it makes without the venv module's ensurepip, which Debian leaves out. The module's tests
    share it, as later runs on one host do."""
    chroot = debian11.overlay(tmp_path_factory.mktemp("debian11"))
    chroot.put(release_file, PEX, 0o755)
    for name, text in STRAY.items():
        chroot.write(f"/root/work/{name}", text)
    first = chroot.run(PEX, "--help", cwd="/root/work", network=False)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "--target-host" in first.stdout and "--kubeconfig" in first.stdout
    venvs = chroot.path("/root/.cache/pex/venvs")
    assert list(venvs.rglob("lib/python3.9/site-packages/runbook")), "not unpacked for 3.9"
    return chroot


def test_release_starts_on_debian11_with_no_network(debian: debian11.Chroot) -> None:
    """Warm now: an option error is the checkout's one line and status 4, still offline."""
    bad = debian.run(PEX, "--target-host", "db.example", "--method", "nope", network=False)
    assert bad.returncode == 4, bad.stdout + bad.stderr
    assert "--method 'nope': use one of stream, seed" in bad.stdout + bad.stderr


def test_release_on_a_noexec_pex_root_says_what_to_do(debian: debian11.Chroot) -> None:
    """psycopg's compiled part cannot be mapped from a noexec filesystem, and Debian has no libpq
    to fall back on: one line naming PEX_ROOT, not a traceback."""
    done = debian.run(PEX, "--help", env={"PEX_ROOT": "/mnt/pex"}, noexec="/mnt", network=False)
    assert done.returncode == 4, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("sbm: ")]
    assert len(said) == 1 and "set PEX_ROOT to a writable directory" in said[0], done.stderr
    assert "Traceback" not in done.stderr


KEY = "release-key-" + secrets.token_hex(8)


@pytest.fixture
def install(test_cluster: clusters.TestCluster) -> Iterator[sbns.Install]:
    cluster = test_cluster.kube
    made = sbns.Install(
        "stackblitz",
        secrets.token_urlsafe(12),
        kots_configs={4: kots_config_values(KEY)},
        kots_versions=[
            {"versionLabel": "1.2.0", "sequence": 4, "status": "deployed", "deployedAt": "x"}
        ],
    )
    sbns.delete(cluster, made.namespace)
    subprocess.run(
        cluster.kubectl("wait", "--for=delete", "namespace/stackblitz", "--timeout=120s"),
        capture_output=True,
        check=False,
    )
    sbns.deploy(cluster, made)
    sbns.seed(cluster, made)
    yield made
    sbns.delete(cluster, made.namespace)


@pytest.fixture
def target(test_cluster: clusters.TestCluster) -> Iterator[pgserver.Server]:
    """The managed server, on this host where pods reach it (the chroot shares its network)."""
    ip, cidr = test_cluster.host_ip, test_cluster.client_cidr
    with pgserver.running_server(18, also_listen_on=ip, allow_cidr=cidr) as server:
        yield pgserver.Server(ip, server.port, server.user, server.password, 18)


def _kubectl_into(chroot: debian11.Chroot, cluster: kube.Kube) -> None:
    """kubectl (a static binary), the KOTS stand-in (Debian's python3 runs it) and a
    kubeconfig with its certificates inside (0600), as an operator's host has them."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH"
    chroot.put(Path(kubectl).resolve(), "/usr/local/bin/kubectl", 0o755)
    chroot.put(sbns.STAND_IN_BIN / "kubectl-kots", "/usr/local/bin/kubectl-kots", 0o755)
    flat = subprocess.run(
        cluster.kubectl("config", "view", "--raw", "--flatten", "--minify"),
        capture_output=True,
        text=True,
        check=True,
    )
    chroot.write("/root/.kube/config", flat.stdout, 0o600)


@pytest.mark.cluster
def test_kubernetes_migration_from_debian11_verifies(
    debian: debian11.Chroot,
    test_cluster: clusters.TestCluster,
    install: sbns.Install,
    target: pgserver.Server,
    release_file: Path,
) -> None:
    _kubectl_into(debian, test_cluster.kube)
    debian.write("/root/target.pw", target.password + "\n", 0o600)
    done = debian.run(
        PEX,
        "--target-host",
        target.host,
        "--target-port",
        str(target.port),
        "--target-user",
        target.user,
        "--target-password-file",
        "/root/target.pw",
        "--stop-app",
        "--key-out",
        "/root/work/stackblitz-enc.key",
        "--change-id",
        "CHG-REL-2",
        cwd="/root/work",
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    run, doc = _evidence(debian.path("/root/work/reports"))
    assert doc["verified"] is True and doc["outcome"]["exit_status"] == 0
    assert doc["source"]["kind"] == "kubernetes" and doc["key_status"] == "captured"
    assert {p.name for p in run.iterdir()} >= {"junit.xml", "report.html", "SHA256SUMS"}
    tool = doc["identity"]["tool"]
    assert tool["python"].startswith("3.9.")  # Debian 11's own
    assert tool["release_file"] == f"{PEX} sha256:{_sha256(release_file)}"
    assert debian.path("/root/work/stackblitz-enc.key").read_text() == KEY + "\n"
    with psycopg.connect(
        host="127.0.0.1",
        port=target.port,
        user=target.user,
        password=target.password,
        dbname=sbns.DATABASE,
    ) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables and tables[0] > 5
