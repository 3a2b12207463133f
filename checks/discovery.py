"""Which pod and which container hold StackBlitz's PostgreSQL, decided from what the pods declare
(no Kubernetes calls here: checks/kube.py reads the pods and asks these rules).

The seed finds the pod with `grep postgres | grep -v kots`; these rules keep that and leave out
what the seed would trip over: finished pods (a completed Job named *postgres*) and pods being
deleted. The container is the one the pod names as its default, else the one that declares a
PostgreSQL server; never one picked by a substring of its image's name (a postgres-exporter
sidecar's image holds "postgres" too).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from checks import container_env, errors

# Where kubectl itself looks for the container to exec into when none is named.
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
POSTGRES_PORT = 5432
POSTGRES_NAMES = ("postgres", "postgresql")


def name_matches(name: str) -> bool:
    """The seed's rule: 'postgres' in the name and not 'kots' (KOTS runs a postgres of its own)."""
    return "postgres" in name and "kots" not in name


def not_usable(pod: client.V1Pod) -> str | None:
    """Why a pod cannot be the database whatever its name: finished, or being deleted."""
    if pod.metadata.deletion_timestamp is not None:
        return "being deleted"
    phase = pod.status.phase if pod.status else None
    if phase in ("Succeeded", "Failed"):
        return f"finished ({phase})"
    return None


def passed_over(pod: client.V1Pod) -> str | None:
    """Why a pod whose name holds 'postgres' is not a candidate; None when it is one."""
    name = pod.metadata.name
    if "postgres" not in name:
        return None
    if "kots" in name:
        return "KOTS's own (name holds 'kots')"
    return not_usable(pod)


def is_candidate(pod: client.V1Pod) -> bool:
    return name_matches(pod.metadata.name) and not_usable(pod) is None


def is_kots_admin_console(pod: client.V1Pod) -> bool:
    """A KOTS admin console's pod (kotsadm, kotsadm-rqlite-0, kotsadm-postgres-0, ...)."""
    return pod.metadata.name.startswith("kotsadm") and not_usable(pod) is None


def signals(container: client.V1Container, env: container_env.Environment) -> list[str]:
    """What the container declares that makes it a PostgreSQL server."""
    found = []
    ports = [p.container_port for p in container.ports or []]
    if POSTGRES_PORT in ports:
        found.append(f"port {POSTGRES_PORT}")
    names = sorted(n for n in env.names() if n.startswith("POSTGRES_") or n == "PGDATA")
    if names:
        found.append("environment " + ", ".join(names))
    if container.name in POSTGRES_NAMES:
        found.append(f"named {container.name}")
    return found


@dataclass(frozen=True)
class ContainerChoice:
    name: str
    why: str


def choose_container(
    pod: client.V1Pod,
    envs: dict[str, container_env.Environment],
    *,
    named: str | None,
) -> ContainerChoice:
    """--source-container, else the pod's default-container annotation, else the one container
    that declares a PostgreSQL server; refused, naming the containers, when that is not one."""
    containers = pod.spec.containers
    names = [c.name for c in containers]
    where = f"pod {pod.metadata.namespace}/{pod.metadata.name}"
    if named:
        if named not in names:
            raise errors.UsageError(
                f"--source-container {named}: {where} has no such container "
                f"(it has {', '.join(names)})"
            )
        return ContainerChoice(named, "--source-container")
    annotated = (pod.metadata.annotations or {}).get(DEFAULT_CONTAINER)
    if annotated:
        if annotated not in names:
            raise errors.UsageError(
                f"{where} names {annotated} as its {DEFAULT_CONTAINER} but has no such container "
                f"(it has {', '.join(names)}): pass --source-container"
            )
        return ContainerChoice(annotated, f"the pod's {DEFAULT_CONTAINER} annotation")
    found = {c.name: signals(c, envs[c.name]) for c in containers}
    looking = [n for n in names if found[n]]
    if len(looking) == 1:
        (name,) = looking
        return ContainerChoice(name, "the only container that declares " + "; ".join(found[name]))
    if not looking and len(names) == 1:
        return ContainerChoice(names[0], "the pod's only container")
    described = ", ".join(f"{n} ({'; '.join(found[n]) or 'nothing of PostgreSQL'})" for n in names)
    unknown = [u for n in names for u in envs[n].unknown]
    unread = f"; unread: {', '.join(unknown)}" if unknown else ""
    said = "several" if looking else "none"
    raise errors.UsageError(
        f"{where}: {said} of its containers declare a PostgreSQL server ({described}{unread}): "
        "pass --source-container NAME"
    )
