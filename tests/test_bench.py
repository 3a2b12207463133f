"""The benchmark runs end to end at a tiny size and prints every figure the approver needs.

Its figures are not asserted against goals here: timings belong to the benchmark's output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _bench(
    module: str, out: Path, *args: str, timeout: float = 600
) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    """`python -m <module> ARGS --json OUT` from the checkout: what it printed, and its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_benchmark_prints_and_writes_its_figures(tmp_path: Path) -> None:
    done, figures = _bench(
        "bench", tmp_path / "bench.json", "--size-gb", "0.02", "--verify-during-copy"
    )
    for key in ("seed_over_runbook", "runbook_over_floor", "verify_over_dump_restore"):
        assert figures[key] > 0 and f'"{key}"' in done.stdout
    # The outage, stop to verified, and how much of verification ran during the copy.
    assert figures["outage_s"] >= figures["runbook"]["dump_s"]
    assert figures["outage_over_floor"] > 0 and "bench: outage " in done.stdout
    assert 0 < figures["verification_overlap"] <= 1
    assert figures["runbook"]["verification"]["source"]["tables_digested_during_copy"] > 0
    assert figures["runbook"]["peak_rss_mb"] > 10
    assert figures["seed"]["artifact_bytes"] > 0 and figures["runbook"]["artifact_bytes"] > 0
    assert figures["database_bytes"] > 15_000_000


@pytest.mark.skipif(
    shutil.which("pgcopydb") is None, reason="pgcopydb is not installed (scripts/setup --peers)"
)
def test_benchmark_times_pgcopydb_as_a_peer(tmp_path: Path) -> None:
    """--peers: pgcopydb clone on the same source into a fresh target, twice (--repeat 2,
    alternating with the runbook and the floor), and the ratio outage / pgcopydb."""
    args = ("--size-gb", "0.02", "--peers", "--repeat", "2")
    done, figures = _bench("bench", tmp_path / "bench.json", *args, timeout=900)
    assert len(figures["pgcopydb"]["samples_s"]) == 2 and figures["pgcopydb"]["seconds"] > 0
    assert len(figures["outage_samples_s"]) == 2
    assert figures["outage_over_pgcopydb"] > 0 and "outage / pgcopydb" in done.stdout


def test_row_narrowing_benchmark_names_the_changed_rows(tmp_path: Path) -> None:
    """bench.rowdiff at a tiny size: the changed rows are all named, a copy is not narrowed."""
    done, figures = _bench("bench.rowdiff", tmp_path / "rowdiff.json", "--size-gb", "0.02")
    assert figures["changed"]["rows_named"] == 10
    assert figures["changed"]["all_changed_rows_named"] is True
    assert figures["changed"]["row_narrowing"]["different"] == 10
    assert "narrowing_over_whole_table_pass" in done.stdout
    assert "(equal: True)" in done.stdout  # the copy matched: nothing to narrow


@pytest.mark.cluster
def test_kubernetes_benchmark_repeats_and_reports_the_in_pod_floor(tmp_path: Path) -> None:
    """`--kubernetes --repeat 2` at a tiny size on the test cluster: both runs of the runbook
    and of the in-pod floor are in the JSON, with the medians and their ratios printed."""
    args = ("--kubernetes", "--size-gb", "0.02", "--repeat", "2")
    done, figures = _bench("bench", tmp_path / "bench.json", *args, timeout=900)
    assert figures["mode"] == "kubernetes" and figures["repeat"] == 2
    assert len(figures["outage_samples_s"]) == len(figures["in_pod_floor_samples_s"]) == 2
    assert figures["in_pod_floor_s"] in figures["in_pod_floor_samples_s"]
    assert figures["outage_s"] > figures["runbook"]["dump_s"] > 0
    for key in ("outage_over_in_pod_floor", "seed_over_outage", "in_pod_floor_s"):
        assert figures[key] > 0 and f'"{key}"' in done.stdout
    assert figures["artifact_fetch_after_outage_s"] > 0  # stage 6: dumped after the outage
    assert "bench: kubernetes medians of 2: outage" in done.stdout
