"""Runs the KOTS CLI (`kubectl kots`) for the StackBlitz app's config and deployed version."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

from checks import errors
from checks.kube import Kube

# What the KOTS CLI prints when it cannot answer, and what the operator should do about it.
_FAILURES = (
    (re.compile(r'unknown command "kots"'), "the KOTS kubectl plugin is not installed: install it"),
    (re.compile(r"Error: app \S+ not found"), "wrong app slug: pass --kots-app"),
    (
        re.compile(r"unable to find kotsadm pod", re.I),
        "no KOTS admin console here: check --namespace",
    ),
    (
        re.compile(r"Unable to authenticate to the Admin Console"),
        "no access to the admin console's secrets: use a kubeconfig that may read them",
    ),
)


def _run(kube: Kube, args: list[str]) -> str:
    done = subprocess.run(
        kube.kubectl("kots", *args), capture_output=True, text=True, check=False, timeout=300
    )
    said = f"{done.stdout}\n{done.stderr}"
    command = f"kubectl kots {' '.join(args[:2])}"
    # Some failures come on stdout with exit status 0: judge by what the CLI says, too.
    for pattern, advice in _FAILURES:
        match = pattern.search(said)
        if match:
            raise errors.KeyNotFound(f"`{command}` said {match[0]!r}: {advice}")
    if done.returncode != 0:
        last = said.strip().splitlines()[-1] if said.strip() else f"exit {done.returncode}"
        raise errors.KeyNotFound(f"`{command}` failed: {last}")
    return done.stdout


def config_values(kube: Kube, namespace: str, app: str, *, sequence: int | None) -> str:
    """The ConfigValues YAML, decrypted; of the deployed sequence unless one is named."""
    which = ["--sequence", str(sequence)] if sequence is not None else ["--current"]
    return _run(kube, ["get", "config", "-n", namespace, "--appslug", app, *which, "--decrypt"])


# Rows per `get versions` call: the CLI's default is 20, and an install that downloads updates
# nobody deploys can hold many more versions newer than the deployed one.
PAGE_SIZE = 100


@dataclass(frozen=True)
class Deployed:
    sequence: int
    version_label: str
    deployed_at: str


@dataclass(frozen=True)
class Versions:
    deployed: Deployed | None  # None: no row says deployed
    rows: int  # how many rows the CLI listed
    pages: int  # in how many calls


def versions(kube: Kube, namespace: str, app: str, *, page_size: int = PAGE_SIZE) -> Versions:
    """Every row of `kubectl kots get versions`, page by page (`--current-page` counts from 0;
    a page shorter than `--page-size` is the last), and the version that runs: newest first is
    not enough (the top row may be pending, and several rows can say deployed), so the deployed
    row with the latest deployedAt."""
    rows: list[dict] = []  # type: ignore[type-arg]
    page = 0
    while True:
        out = _run(
            kube,
            [
                "get",
                "versions",
                app,
                "-n",
                namespace,
                "-o",
                "json",
                "--page-size",
                str(page_size),
                "--current-page",
                str(page),
            ],
        )
        try:
            got = json.loads(out) or []  # past the end the CLI may print null
        except json.JSONDecodeError as e:
            raise errors.KeyNotFound(f"`kubectl kots get versions` did not print JSON: {e}") from e
        if not isinstance(got, list):
            raise errors.KeyNotFound("`kubectl kots get versions -o json` printed no list")
        rows += got
        page += 1
        if len(got) < page_size:
            break
    deployed = [r for r in rows if str(r.get("status", "")).lower() == "deployed"]
    if not deployed:
        return Versions(None, len(rows), page)
    best = max(deployed, key=lambda r: (str(r.get("deployedAt") or ""), int(r.get("sequence", 0))))
    found = Deployed(
        int(best["sequence"]), str(best.get("versionLabel", "")), str(best.get("deployedAt", ""))
    )
    return Versions(found, len(rows), page)
