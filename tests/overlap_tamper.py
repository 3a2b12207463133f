"""A pytest plugin for the runbook runs of tests/test_overlap.py (`-p tests.overlap_tamper`).

Once the copy's early digests are done and before stage 4's final check, it runs one SQL
statement on the target (SBM_TEST_TAMPER_TARGET) or the source (SBM_TEST_TAMPER_SOURCE), as
another program's session would: what the overlap must still catch.
"""

from __future__ import annotations

import os

import pytest

from fixtures import options
from fixtures.run import run_of


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.name != "test_data_matches":
        return
    run, settings = run_of(item.config), options.settings(item.config)
    assert run.early is not None and run.early.started, "the copy took no early digests"
    assert settings is not None and settings.source is not None and settings.target is not None
    run.early.wait()
    for variable, endpoint in (
        ("SBM_TEST_TAMPER_TARGET", settings.target),
        ("SBM_TEST_TAMPER_SOURCE", settings.source),
    ):
        statement = os.environ.get(variable)
        if statement:
            with endpoint.connect(dbname=settings.database) as conn:
                conn.execute(statement)
