"""The code runs on Python 3.9: every module compiles and imports under Debian 11's own python3.

Debian 11 (and RHEL 9) ship Python 3.9; ruff's py39 target catches new syntax, this catches
library calls and dependencies that 3.9 lacks, on a real Debian 11 root filesystem
(`scripts/debian11-rootfs`, or the directory STACKBLITZ_MIGRATE_DEBIAN11_ROOTFS names). The
dependencies are the ones pip picks for 3.9 (pyproject's markers), installed by pip running
under that python3, once per dependency list, into the project cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from checks import pgtools
from tests import debian11, import_all

try:
    import tomllib
except ImportError:  # Python 3.9 and 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
# Inside the root filesystem, empty directories of Debian's layout, bound in a mount namespace
# of the test's own: the shared root filesystem itself is never written.
CHECKOUT, SITE = "/mnt", "/srv"


def _in_rootfs(
    rootfs: Path, site: Path, argv: list[str], *, site_writable: bool = False
) -> subprocess.CompletedProcess[str]:
    """argv under chroot, with the checkout (read-only) at /mnt and `site` at /srv, an empty /tmp
    and /root, in a clean environment."""
    mount_site = "mount --bind" if site_writable else "mount -o bind,ro"
    binds = (
        f'mount -o bind,ro "$1" "$3{CHECKOUT}" && {mount_site} "$2" "$3{SITE}" && root=$3 && '
        # what pip and python3 write on their own goes nowhere
        'mount -t tmpfs none "$root/tmp" && mount -t tmpfs none "$root/root" && '
        # the host's resolver, for pip (the root filesystem's may be stale)
        'if [ -f "$root/etc/resolv.conf" ]; then '
        'mount -o bind,ro /etc/resolv.conf "$root/etc/resolv.conf"; fi && '
        'shift 3 && exec chroot "$root" "$@"'
    )
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
    return subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c", binds, "sh"),
            *(str(REPO), str(site), str(rootfs), *env, *argv),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _site(rootfs: Path) -> Path:
    """The dependencies for Python 3.9, installed by pip running under the root filesystem's
    python3 so that pyproject's markers (and the dependencies' own) are judged by 3.9: the
    host's pip with --python-version would judge them by its own Python."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256("\n".join(["cp39", *dependencies]).encode()).hexdigest()[:16]
    site = pgtools.cache_dir() / "py39-site" / key
    site.parent.mkdir(parents=True, exist_ok=True)
    with (site.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same one: wait for it
        if site.is_dir():
            return site
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=site.parent))
        try:
            (work / "site").mkdir()
            (work / "site" / "requirements.txt").write_text("\n".join(dependencies) + "\n")
            shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", work / "site" / "ca.crt")
            # pip itself, the newest for 3.9, run from its wheel: Debian's minimal python3 has
            # no pip (nor distutils, which pip reaches for on 3.9 unless told to use sysconfig).
            subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                    *("--only-binary=:all:", "--python-version", "3.9", "-d", str(work / "site")),
                    "pip",
                ],
                check=True,
                capture_output=True,
            )
            wheel = next((work / "site").glob("pip-*.whl")).name
            install = (
                "import runpy, sys, sysconfig; sysconfig._PIP_USE_SYSCONFIG = True; "
                f"sys.path.insert(0, '{SITE}/{wheel}'); sys.argv = ['pip', 'install', "
                f"'--quiet', '--disable-pip-version-check', '--no-cache-dir', '--cert', "
                f"'{SITE}/ca.crt', '--only-binary=:all:', '--target', '{SITE}/lib', "
                f"'-r', '{SITE}/requirements.txt']; runpy.run_module('pip', run_name='__main__')"
            )
            done = _in_rootfs(rootfs, work / "site", ["python3", "-c", install], site_writable=True)
            if done.returncode != 0:
                pytest.fail(f"pip under Debian 11's python3 failed: {done.stderr[-3000:]}")
            (work / "site" / "lib").chmod(0o755)
            (work / "site" / "lib").rename(site)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return site


def test_every_module_imports_under_debian_11s_python() -> None:
    rootfs = debian11.rootfs()
    site = _site(rootfs)
    done = _in_rootfs(
        rootfs,
        site,
        [
            "sh",
            "-c",
            f'cd {CHECKOUT} && PYTHONPATH={SITE} PYTHONDONTWRITEBYTECODE=1 exec python3 "$@"',
            "sh",
            "tests/import_all.py",
        ],
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("Python 3.9."), summary
    total = len(import_all.modules(REPO))
    assert summary.endswith(f": {total} of {total} modules compile and import"), summary
