"""Prints the release's requirements, one a line: pyproject.toml's dependencies less those only
the project's tests and `--rehearsal-backend docker` use (scripts/build-release locks them)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.9 and 3.10: pip's own copy of the same parser
    from pip._vendor import tomli as tomllib

LEFT_OUT = ("testcontainers",)  # Docker rehearsals only; the release refuses them in one line


def requirements(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return sorted(d for d in deps if not d.startswith(LEFT_OUT))


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]))))
