"""A pytest plugin for the runbook runs of the project's tests (`-p tests.runbook_hooks`): a
session of another program acting at a chosen moment of a real run.

Before stage 4's data check (with --verify-during-copy, once the copy's early digests are done:
checks.overlap):
- SBM_TEST_TAMPER_TARGET / SBM_TEST_TAMPER_SOURCE: one SQL statement run on the target or the
  source database, a change the final check must still catch (tests/test_overlap.py);
- SBM_TEST_HOLD_VERIFY: a file created, then a wait of up to a minute, for a signal to arrive
  during verification (tests/test_faults.py): the final check alone is over too fast to hit.

Before stage 6 (artifact):
- SBM_TEST_BEFORE_ARTIFACT_SOURCE: SQL statements, separated by lines holding only ";", run on
  the source database (through the run's own source: direct, or the Kubernetes source's
  port-forward): the held snapshot's session ended, a write (tests/test_faults.py,
  tests/test_faults_kubernetes.py).

From the start: SBM_TEST_TARGET_PROBE, a number that replaces the target's probe hash when the
run decides its row digest (checks.rowdigest), as a big-endian target's would differ
(tests/test_row_digest.py): no big-endian server runs here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks import rowdigest
from fixtures import options
from fixtures.run import run_of


def pytest_configure(config: pytest.Config) -> None:
    replaced = os.environ.get("SBM_TEST_TARGET_PROBE")
    if not replaced:
        return
    choose = rowdigest.choose

    def disagreeing(
        source: int | None, target: int | None, majors: tuple[int, int]
    ) -> rowdigest.Choice:
        return choose(source, int(replaced), majors)

    rowdigest.choose = disagreeing  # type: ignore[assignment]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    result = yield  # the test's fixtures are set up: the source's, of either mode
    if item.name == "test_artifact_is_in_the_workdir_with_its_checksums":
        _before_artifact(item)
    _before_data_check(item)
    return result


def _before_data_check(item: pytest.Item) -> None:
    if item.name != "test_data_matches":
        return
    run, settings = run_of(item.config), options.settings(item.config)
    assert settings is not None
    if settings.verify_during_copy:
        assert run.early is not None and run.early.started, "the copy took no early digests"
        run.early.wait()
    for variable, endpoint in (
        ("SBM_TEST_TAMPER_TARGET", settings.target),
        ("SBM_TEST_TAMPER_SOURCE", settings.source),
    ):
        statement = os.environ.get(variable)
        if statement:
            assert endpoint is not None, f"{variable}: direct mode's"
            with endpoint.connect(dbname=settings.database) as conn:
                conn.execute(statement)
    hold = os.environ.get("SBM_TEST_HOLD_VERIFY")
    if hold:
        Path(hold).touch()
        time.sleep(60)


def _before_artifact(item: pytest.Item) -> None:
    statements = os.environ.get("SBM_TEST_BEFORE_ARTIFACT_SOURCE")
    source = item.funcargs.get("source")  # type: ignore[attr-defined]
    if not statements or source is None:
        return
    with source.connect() as conn:  # direct, or through the Kubernetes source's port-forward
        for statement in statements.split("\n;\n"):
            conn.execute(statement)
