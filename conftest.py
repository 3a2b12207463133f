"""Loads the project's pytest plugins for both the runbook and the project's own tests."""

pytest_plugins = (
    "fixtures.options",
    "fixtures.run",
    "fixtures.applicability",
    "fixtures.identity",
    "fixtures.stages",
    "fixtures.outcome",
    "fixtures.evidence",
    "fixtures.faults",
)
