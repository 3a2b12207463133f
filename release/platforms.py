"""Writes the release's target platforms as pex "complete platforms" (one JSON file each) into a
directory: CPython 3.9 to 3.13 on Linux x86_64 and aarch64 with glibc 2.28 or newer (Debian 10+,
Ubuntu 20.04+, RHEL 8+).

Complete rather than abbreviated platforms, because the dependencies differ by Python version
(`python_version < '3.10'` markers) and an abbreviated platform has no full version for pex to
evaluate them with; glibc 2.28, because psycopg-binary ships its aarch64 wheels for 3.10+ as
manylinux_2_28 only. The tags are those pip computes (packaging.tags), most specific first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pip._vendor.packaging import tags

PYTHONS = ((3, 9), (3, 10), (3, 11), (3, 12), (3, 13))
ARCHES = ("x86_64", "aarch64")
GLIBC_MINOR = 28  # the oldest glibc 2.x the release runs on


def _platforms(arch: str) -> list[str]:
    names = []
    for minor in range(GLIBC_MINOR, 16, -1):  # manylinux_2_28 down to manylinux_2_17 (2014)
        names.append(f"manylinux_2_{minor}_{arch}")
        if minor == 17:
            names.append(f"manylinux2014_{arch}")
    return [*names, f"linux_{arch}"]


def complete_platform(python: tuple[int, int], arch: str) -> dict[str, object]:
    version = f"{python[0]}.{python[1]}"
    interpreter = f"cp{python[0]}{python[1]}"
    platforms = _platforms(arch)
    compatible = [
        *tags.cpython_tags(python, abis=[interpreter], platforms=platforms),
        *tags.compatible_tags(python, interpreter=interpreter, platforms=platforms),
    ]
    return {
        "marker_environment": {
            "implementation_name": "cpython",
            "implementation_version": f"{version}.0",
            "os_name": "posix",
            "platform_machine": arch,
            "platform_python_implementation": "CPython",
            "platform_system": "Linux",
            "python_full_version": f"{version}.0",
            "python_version": version,
            "sys_platform": "linux",
        },
        "compatible_tags": [str(t) for t in compatible],
    }


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for python in PYTHONS:
        for arch in ARCHES:
            path = directory / f"cp{python[0]}{python[1]}-{arch}.json"
            path.write_text(json.dumps(complete_platform(python, arch), indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
