"""report.html prints well: rendered to PDF by headless Chromium (Debian's `chromium`, installed by
scripts/setup --report-tools), its first page holds the verdict box, as an approver files it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.runbook_cli import KIND_ABSENT, Outcome, run_runbook


def _pdf(report: Path) -> Path:
    for program in ("chromium", "pdftotext", "pdfinfo"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed: run scripts/setup --report-tools")
    pdf = report.with_suffix(".pdf")
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",  # root here; the page is our own file
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and pdf.is_file(), done.stderr[-2000:]
    return pdf


def _page(pdf: Path, number: int) -> str:
    text = subprocess.run(
        ["pdftotext", "-layout", "-f", str(number), "-l", str(number), str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return " ".join(text.split())


def _pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(
        next(line for line in info.stdout.splitlines() if line.startswith("Pages:")).split()[1]
    )


def test_a_migration_report_prints_with_the_verdict_on_page_1(tmp_path: Path) -> None:
    run: Outcome = run_runbook(tmp_path, "--rehearsal", "--change-id", "CHG-PRINT-1")
    assert run.code == 0, run.output[-3000:]
    pdf = _pdf(run.reports / "report.html")
    first = _page(pdf, 1)
    assert "PASSED: migration of stackblitz_production" in first, first
    for fact in (
        "every check that applies passed (exit status 0)",
        "change CHG-PRINT-1",
        "data verified yes",
        "encryption key captured",
        f"outage {run.evidence['outage']['seconds']} s",
        "sealed SHA256SUMS",
    ):
        assert fact in first, (fact, first)
    # the checks' table follows on later pages: page 1 is the verdict, not the whole report
    assert _pages(pdf) > 1
    assert "test_encryption_key_is_found" not in first


def test_a_run_not_done_prints_so_on_page_1(tmp_path: Path) -> None:
    run = run_runbook(tmp_path, "--rehearsal=kind", env=KIND_ABSENT)
    assert run.code == 6, run.output[-3000:]
    first = _page(_pdf(run.reports / "report.html"), 1)
    assert "NOT DONE: migration of stackblitz_production (rehearsal: kind)" in first, first
    assert "--rehearsal=kind cannot start here" in first
