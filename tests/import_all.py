"""Compiles every module of the project and imports it, under whatever Python runs this.

`python3 tests/import_all.py` from the checkout's top (tests/test_python39.py runs it under
Debian 11's Python 3.9): one line per module that does not compile or import, then a summary;
exit status 1 when any failed. No bytecode is written.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

PACKAGES = ("checks", "fixtures", "runbook", "bench", "tests")


def modules(root: Path) -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]
    return [*files, root / "conftest.py"]


def main() -> int:
    sys.dont_write_bytecode = True
    root = Path.cwd()
    sys.path.insert(0, str(root))
    failed = 0
    files = modules(root)
    for path in files:
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        try:
            compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)
            if path.name != "__main__.py":  # bench's runs the benchmark
                importlib.import_module(name.removesuffix(".__init__"))
        except Exception:
            failed += 1
            print(f"FAILED {name}: {traceback.format_exc().strip().splitlines()[-1]}")
    version = sys.version.split()[0]
    print(f"Python {version}: {len(files) - failed} of {len(files)} modules compile and import")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
