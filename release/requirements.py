"""The release's requirements: pyproject.toml's dependencies less those only the project's tests
and `--rehearsal-backend docker` use.

  python release/requirements.py pyproject.toml            prints them, one a line (to lock)
  python release/requirements.py pyproject.toml LOCK.json  exit status 1 when the lock was made
                                                           for other requirements
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pip._vendor.packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.9 and 3.10: pip's own copy of the same parser
    from pip._vendor import tomli as tomllib

LEFT_OUT = ("testcontainers",)  # Docker rehearsals only; the release refuses them in one line


def requirements(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return sorted(d for d in deps if Requirement(d).name not in LEFT_OUT)


def _normal(reqs: list[str]) -> list[str]:
    """Written as pex writes them in a lock: specifiers sorted, markers double-quoted."""
    return sorted(str(Requirement(r)) for r in reqs)


if __name__ == "__main__":
    wanted = requirements(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        locked = json.loads(Path(sys.argv[2]).read_text())["requirements"]
        sys.exit(0 if _normal(locked) == _normal(wanted) else 1)
    print("\n".join(wanted))
