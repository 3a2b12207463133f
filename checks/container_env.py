"""A container's environment as the kubelet builds it from the pod spec: `envFrom` first (whole
ConfigMaps and Secrets, with `prefix`), then `env` in order (literals with `$(VAR)` references to
what came before, and `valueFrom` Secret, ConfigMap and field references; `optional` ones that
are missing are left out). Later definitions win, as in the kubelet.

No Kubernetes here: the caller gives `lookup`, which reads a ConfigMap's or Secret's data.
A value the spec cannot tell (an object this kubeconfig may not read, a resource limit, an object
deleted since the container started) is None: only the running container knows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client


class Unreadable(Exception):
    """`lookup` may not read the object (the API said 403)."""


# kind ("configMap" or "secret"), name -> its data (Secrets' decoded), or None when it is absent.
Lookup = Callable[[str, str], "dict[str, str] | None"]

# The kubelet skips envFrom keys that are not environment variable names (and says so in an
# event); this is its strict rule, which every name this project looks for satisfies.
_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass(frozen=True)
class Var:
    value: str | None = field(repr=False)  # None: only the container itself can tell
    origin: str  # where the kubelet took it from, for the evidence (never the value)
    secret: bool = False  # from a Secret, directly or through $(VAR): never shown


@dataclass
class Environment:
    vars: dict[str, Var] = field(default_factory=dict)
    # envFrom sources whose keys could not be read: names from them are unknown.
    unknown: list[str] = field(default_factory=list)

    def names(self) -> set[str]:
        return set(self.vars)


def build(container: client.V1Container, pod: client.V1Pod, lookup: Lookup) -> Environment:
    env = Environment()
    for source in container.env_from or []:
        _env_from(env, source, lookup)
    for var in container.env or []:
        resolved = _var(env, var, pod, lookup)
        if resolved is not None:
            env.vars[var.name] = resolved
    return env


def _read(lookup: Lookup, kind: str, name: str) -> tuple[dict[str, str] | None, str]:
    """The object's data and, when it has none to give, why ("" when it was read)."""
    try:
        data = lookup(kind, name)
    except Unreadable:
        return None, "may not be read"
    return (data, "") if data is not None else (None, "absent")


def _env_from(env: Environment, source: client.V1EnvFromSource, lookup: Lookup) -> None:
    ref = source.config_map_ref or source.secret_ref
    if ref is None:
        return
    kind = "configMap" if source.config_map_ref else "secret"
    prefix = source.prefix or ""
    where = f"envFrom {kind} {ref.name}" + (f" (prefix {prefix})" if prefix else "")
    data, missing = _read(lookup, kind, ref.name)
    if data is None:
        # Absent and optional: the kubelet skipped it. Absent and required: deleted since the
        # container started (it would not have started). Either way its names are unknown here.
        if not (missing == "absent" and ref.optional):
            env.unknown.append(f"{where}: {missing}")
        return
    for key, value in data.items():
        name = prefix + key
        if _NAME.match(name):
            env.vars[name] = Var(value, where, secret=kind == "secret")


def _var(env: Environment, var: client.V1EnvVar, pod: client.V1Pod, lookup: Lookup) -> Var | None:
    """The variable's value, or None when the kubelet leaves it out (an optional key that is
    missing)."""
    if var.value:  # the kubelet expands only non-empty literals
        return _expand(var.value, env.vars)
    source = var.value_from
    if source is None:
        return Var(var.value or "", "env literal")
    ref = source.config_map_key_ref or source.secret_key_ref
    if ref is not None:
        kind = "configMap" if source.config_map_key_ref else "secret"
        where = f"{kind} {ref.name} key {ref.key}"
        data, missing = _read(lookup, kind, ref.name)
        if data is not None and ref.key in data:
            return Var(data[ref.key], where, secret=kind == "secret")
        if ref.optional and missing != "may not be read":
            return None  # left out by the kubelet
        why = missing or "absent"
        return Var(None, f"{where} ({'key ' if data is not None else ''}{why})", kind == "secret")
    if source.field_ref is not None:
        path = source.field_ref.field_path
        return Var(_field(pod, path), f"field {path}")
    return Var(None, "resource field")  # limits and requests: the container knows them


_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _field(pod: client.V1Pod, path: str) -> str | None:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    fields = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": spec.node_name,
        "spec.serviceAccountName": spec.service_account_name,
        "status.hostIP": status.host_ip if status else None,
        "status.podIP": status.pod_ip if status else None,
    }
    if path in fields:
        return fields[path]
    match = _LABEL.match(path)
    if match:
        return ((meta.labels if match[1] == "labels" else meta.annotations) or {}).get(match[2])
    return None


def _expand(text: str, known: dict[str, Var]) -> Var:
    """`$(VAR)` replaced by an earlier variable's value, `$$` by `$`; a reference to a variable
    not defined before stays as written (Kubernetes' expansion rules)."""
    out: list[str] = []
    unknown = secret = False
    refs: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and ")" in text[i + 2 :]:
            end = text.index(")", i + 2)
            name = text[i + 2 : end]
            var = known.get(name)
            if var is None:
                out.append(f"$({name})")
            else:
                refs.append(name)
                unknown |= var.value is None
                secret |= var.secret
                out.append(var.value or "")
            i = end + 1
        else:
            out.append("$" + following)
            i += 2
    origin = "env literal" + (f" referring to {', '.join(refs)}" if refs else "")
    return Var(None if unknown else "".join(out), origin, secret)
