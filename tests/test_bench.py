"""The benchmark runs end to end at a tiny size and prints every figure the approver needs.

Its figures are not asserted against goals here: timings belong to the benchmark's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_prints_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size-gb", "0.02", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("seed_over_runbook", "runbook_over_floor", "verify_over_dump_restore"):
        assert figures[key] > 0 and f'"{key}"' in done.stdout
    assert figures["runbook"]["peak_rss_mb"] > 10
    assert figures["seed"]["artifact_bytes"] > 0 and figures["runbook"]["artifact_bytes"] > 0
    assert figures["database_bytes"] > 15_000_000


def test_row_narrowing_benchmark_names_the_changed_rows(tmp_path: Path) -> None:
    """bench.rowdiff at a tiny size: the changed rows are all named, a copy is not narrowed."""
    out = tmp_path / "rowdiff.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.rowdiff", "--size-gb", "0.02", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["changed"]["rows_named"] == 10
    assert figures["changed"]["all_changed_rows_named"] is True
    assert figures["changed"]["row_narrowing"]["different"] == 10
    assert "narrowing_over_whole_table_pass" in done.stdout
    assert "(equal: True)" in done.stdout  # the copy matched: nothing to narrow
