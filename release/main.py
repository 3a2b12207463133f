"""`./stackblitz-migrate.pex ARGS` is `pytest runbook/ ARGS` run from a checkout: the same
options, stages, evidence and exit statuses, whatever directory it is run from.

The pex unpacks into a virtualenv of its own (under PEX_ROOT, ~/.cache/pex by default): pytest
collects files, not zip members. Only that virtualenv's distributions are there, so pytest's
plugin autoload finds exactly the checkout's plugins (pytest-html, pytest-metadata, pytest-kind);
the configuration, rootdir and conftest cut-off are this tree's, so a pytest.ini, pyproject.toml
or conftest.py in the operator's directory changes nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the unpacked tree: runbook/, conftest.py, ...


def pytest_args(argv: list[str]) -> list[str]:
    """The pytest command line that runs the bundled runbook with the operator's arguments."""
    return [
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(ROOT),
        "--confcutdir",
        str(ROOT),
        str(ROOT / "runbook"),
        *argv,
    ]


def _binary_modules_load() -> str | None:
    """Why psycopg cannot load its compiled libpq wrapper (a PEX_ROOT on a noexec mount refuses
    to map it, and a Debian host has no libpq of its own to fall back on), or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        return " ".join(str(e).split())
    return None


def main() -> None:
    why = _binary_modules_load()
    if why:
        print(
            f"sbm: this release cannot load its compiled modules from {ROOT} ({why}): set "
            "PEX_ROOT to a writable directory on a filesystem that allows executables "
            "(e.g. PEX_ROOT=/var/tmp/sbm-pex) and run it again",
            file=sys.stderr,
        )
        sys.exit(4)
    # The plugins are the bundled distributions' own; an operator's setting must not drop them.
    os.environ.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    import pytest

    sys.exit(int(pytest.main(pytest_args(sys.argv[1:]))))


if __name__ == "__main__":
    main()
