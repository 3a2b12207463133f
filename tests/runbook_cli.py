"""Runs `pytest runbook/ ...` as an operator would, in a subprocess, and reads its evidence."""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from checks import pgtools
from fixtures import pgserver
from fixtures.kots_sample import kots_config_values

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    code: int
    output: str
    reports: Path
    workdir: Path

    @property
    def evidence(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.reports / "evidence.json").read_text())

    def check(self, name: str) -> dict:  # type: ignore[type-arg]
        return next(c for c in self.evidence["checks"] if c["name"] == name)

    def junit_skips(self) -> list[str]:
        root = ET.parse(self.reports / "junit.xml").getroot()
        return [s.get("message", "") for s in root.iter("skipped")]

    def junit_suite(self) -> tuple[str, dict[str, str]]:
        """The JUnit suite's name and properties."""
        suite = next(ET.parse(self.reports / "junit.xml").getroot().iter("testsuite"))
        props = {p.get("name", ""): p.get("value", "") for p in suite.iter("property")}
        return suite.get("name", ""), props


def password_file(directory: Path, name: str, password: str) -> Path:
    path = directory / name
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def target_args(target: pgserver.Server, secrets_dir: Path) -> list[str]:
    return [
        "--target-host",
        target.host,
        "--target-port",
        str(target.port),
        "--target-user",
        target.user,
        "--target-password-file",
        str(password_file(secrets_dir, "target-pw", target.password)),
    ]


def kots_args(directory: Path) -> list[str]:
    """A saved `kubectl kots get config --decrypt` (mode 0600) holding a fresh key."""
    config = kots_config_values(secrets.token_urlsafe(24))
    return ["--kots-config-file", str(password_file(directory, "kots-config.yaml", config))]


def direct_args(
    source: pgserver.Server,
    target: pgserver.Server,
    secrets_dir: Path,
    *,
    database: str,
    key: bool = True,
) -> list[str]:
    """Direct mode between two servers; `key` adds a KOTS config, without which the encryption
    key stage is not done."""
    return [
        "--source-dsn",
        f"host={source.host} port={source.port} user={source.user}",
        "--source-password-file",
        str(password_file(secrets_dir, "source-pw", source.password)),
        *target_args(target, secrets_dir),
        "--database",
        database,
        *(kots_args(secrets_dir) if key else []),
    ]


# `--rehearsal=kind` that cannot start wherever it runs (its node image is absent): the quick way
# to a run that is "not done", now that kind can run where `scripts/setup --kind` was run.
KIND_ABSENT = {"KIND_NODE_IMAGE": "stackblitz-migrate/kind-node:absent"}


# Runs argv with an empty tmpfs over each directory named first, in a mount namespace of its
# own: what the run may not see stays as it is for everybody else.
_HIDING = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do mount -t tmpfs none "$1"; shift; n=$((n-1)); done; '
    'exec "$@"'
)


def postgresql_program_dirs() -> list[Path]:
    """Where PostgreSQL's programs can be found on this host (checks.pgtools looks there)."""
    places = [
        pgtools.cache_dir() / "pg",
        Path("/usr/lib/postgresql"),
        *Path("/").glob("usr/pgsql-*"),
    ]
    return [p for p in places if p.is_dir()]


def hidden(directories: list[Path], argv: list[str]) -> list[str]:
    """argv run where `directories` look empty."""
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDING, "sh"]
    return [*unshare, str(len(directories)), *map(str, directories), *argv]


def _argv(workdir: Path, reports: Path, args: tuple[str, ...]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "runbook/",
        "--workdir",
        str(workdir),
        "--reports-dir",
        str(reports),
        *args,
    ]


def run_runbook(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    workdir: Path | None = None,
    hide: list[Path] | None = None,
) -> Outcome:
    """Run the runbook with its workdir and reports under `tmp`; never raises on failure.
    `hide`: directories the run sees empty (e.g. postgresql_program_dirs())."""
    workdir, reports = workdir or tmp / "work", tmp / "reports"
    workdir.mkdir(parents=True, exist_ok=True)
    argv = _argv(workdir, reports, args)
    proc = subprocess.run(
        hidden(hide, argv) if hide else argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout + proc.stderr, reports, workdir)


def verdict_box(report: Path) -> str:
    """The text of report.html's verdict box, tags dropped and spaces squeezed."""
    found = re.search(r'<div class="verdict" id="verdict".*?</table></div>', report.read_text())
    assert found, f"no verdict box in {report}"
    text = html.unescape(re.sub(r"<[^>]+>", " ", found.group(0)))
    return " ".join(text.split())


@dataclass
class Running:
    """A runbook started in the background, in a session of its own (as a terminal's job is:
    its process group can be sent a Ctrl-C's SIGINT without reaching the tests)."""

    proc: subprocess.Popen[bytes]
    log: Path
    reports: Path
    workdir: Path

    def finish(self, timeout: float = 300) -> Outcome:
        self.proc.wait(timeout=timeout)
        output = self.log.read_text(errors="replace")
        return Outcome(self.proc.returncode, output, self.reports, self.workdir)

    def stop(self) -> None:
        """A test that failed before its run ended: the run stops as it would on SIGTERM (its
        own cleanup), so that the next test does not meet it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_runbook(
    tmp: Path, *args: str, workdir: Path | None = None, env: dict[str, str] | None = None
) -> Running:
    workdir, reports = workdir or tmp / "work", tmp / "reports"
    workdir.mkdir(parents=True, exist_ok=True)
    log = tmp / "runbook.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _argv(workdir, reports, args),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    running = Running(proc, log, reports, workdir)
    _STARTED.append(running)
    return running


_STARTED: list[Running] = []


def stop_started() -> None:
    """Stop every run start_runbook started that still runs (a test's teardown)."""
    while _STARTED:
        _STARTED.pop().stop()
