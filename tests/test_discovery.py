"""The rules discovery applies to what pods declare: the container's environment as the kubelet
builds it, and the choice of pod and container. Pure functions of the pod spec: the pods here
are the kubernetes client's own model objects, and the ConfigMaps and Secrets a dict (`lookup`
stands where the API would answer); tests/test_installs.py runs the same on the test cluster.
"""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from checks import container_env, discovery, errors, kube, pgtools
from checks import kubernetes as kubernetes_source

OBJECTS: dict[tuple[str, str], dict[str, str]] = {
    ("configMap", "pg"): {"USER": "stackblitz", "DB": "stackblitz_production", "bad key": "x"},
    ("configMap", "paths"): {"DATA_ROOT": "/data", "USER": "overridden-by-env"},
    ("secret", "pw"): {"password": "s3cret"},
}
FORBIDDEN = {("secret", "locked")}


def lookup(kind: str, name: str) -> dict[str, str] | None:
    if (kind, name) in FORBIDDEN:
        raise container_env.Unreadable(name)
    return OBJECTS.get((kind, name))


def _pod(
    *containers: client.V1Container, annotations: dict[str, str] | None = None
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="postgres-0", namespace="sb", uid="u-1", annotations=annotations, labels={"a": "b"}
        ),
        spec=client.V1PodSpec(containers=list(containers), node_name="node-1"),
        status=client.V1PodStatus(phase="Running", pod_ip="10.0.0.7"),
    )


def _env(name: str, value: str | None = None, **source: object) -> client.V1EnvVar:
    return client.V1EnvVar(
        name=name, value=value, value_from=client.V1EnvVarSource(**source) if source else None
    )


def _build(container: client.V1Container) -> container_env.Environment:
    return container_env.build(container, _pod(container), lookup)


def test_env_from_with_prefix_then_env_in_order_later_wins() -> None:
    c = client.V1Container(
        name="db",
        env_from=[
            client.V1EnvFromSource(
                config_map_ref=client.V1ConfigMapEnvSource(name="pg"), prefix="POSTGRES_"
            ),
            client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name="paths")),
        ],
        env=[_env("USER", "from-env")],
    )
    env = _build(c)
    assert env.vars["POSTGRES_USER"].value == "stackblitz"
    assert env.vars["POSTGRES_USER"].origin == "envFrom configMap pg (prefix POSTGRES_)"
    assert env.vars["POSTGRES_DB"].value == "stackblitz_production"
    assert env.vars["USER"].value == "from-env"  # env after envFrom: the literal wins
    assert "POSTGRES_bad key" not in env.vars  # not a variable name: the kubelet skips it


def test_references_expand_as_kubernetes_does() -> None:
    c = client.V1Container(
        name="db",
        env_from=[client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name="paths"))],
        env=[
            _env("PGDATA", "$(DATA_ROOT)/pgdata"),
            _env("LATER", "$(DEFINED_AFTER)"),  # not defined before it: stays as written
            _env("ESCAPED", "$$(DATA_ROOT) and $x and $(unclosed"),
            _env("DEFINED_AFTER", "x"),
            _env("PASS", secret_key_ref=client.V1SecretKeySelector(name="pw", key="password")),
            _env("DSN", "user:$(PASS)@db"),
        ],
    )
    env = _build(c)
    assert env.vars["PGDATA"].value == "/data/pgdata"
    assert env.vars["PGDATA"].origin == "env literal referring to DATA_ROOT"
    assert env.vars["LATER"].value == "$(DEFINED_AFTER)"
    assert env.vars["ESCAPED"].value == "$(DATA_ROOT) and $x and $(unclosed"
    assert env.vars["PASS"].value == "s3cret" and env.vars["PASS"].secret
    assert env.vars["DSN"].value == "user:s3cret@db" and env.vars["DSN"].secret
    assert "s3cret" not in repr(env.vars["DSN"])  # values stay out of reprs and logs


def test_optional_keys_and_objects_are_left_out_and_unreadable_ones_unknown() -> None:
    c = client.V1Container(
        name="db",
        env_from=[
            client.V1EnvFromSource(
                secret_ref=client.V1SecretEnvSource(name="absent", optional=True)
            ),
            client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name="locked")),
        ],
        env=[
            _env(
                "GONE",
                config_map_key_ref=client.V1ConfigMapKeySelector(
                    name="pg", key="nope", optional=True
                ),
            ),
            _env(
                "POSTGRES_PASSWORD",
                secret_key_ref=client.V1SecretKeySelector(name="locked", key="password"),
            ),
            _env("NODE", field_ref=client.V1ObjectFieldSelector(field_path="spec.nodeName")),
            _env(
                "LABEL",
                field_ref=client.V1ObjectFieldSelector(field_path="metadata.labels['a']"),
            ),
            _env("CPU", resource_field_ref=client.V1ResourceFieldSelector(resource="limits.cpu")),
        ],
    )
    env = _build(c)
    assert "GONE" not in env.vars
    assert env.unknown == ["envFrom secret locked: may not be read"]
    assert env.vars["POSTGRES_PASSWORD"].value is None  # only the container can tell
    assert "may not be read" in env.vars["POSTGRES_PASSWORD"].origin
    assert (env.vars["NODE"].value, env.vars["LABEL"].value) == ("node-1", "b")
    assert env.vars["CPU"].value is None


def _container(
    name: str, *, port: int | None = None, env: tuple[str, ...] = ()
) -> client.V1Container:
    return client.V1Container(
        name=name,
        image="prometheuscommunity/postgres-exporter" if "exporter" in name else "postgres:15",
        ports=[client.V1ContainerPort(container_port=port)] if port else None,
        env=[_env(n, "x") for n in env],
    )


def _choose(pod: client.V1Pod, named: str | None = None) -> discovery.ContainerChoice:
    envs = {c.name: container_env.build(c, pod, lookup) for c in pod.spec.containers}
    return discovery.choose_container(pod, envs, named=named)


def test_an_exporter_sidecar_listed_first_is_not_the_database() -> None:
    exporter = _container("postgres-exporter", port=9187, env=("DATA_SOURCE_NAME",))
    db = _container("db", env=("PGDATA",))
    choice = _choose(_pod(exporter, db))
    assert choice.name == "db"
    assert choice.why == "the only container that declares environment PGDATA"


def test_two_postgres_looking_containers_are_refused_unless_annotated_or_named() -> None:
    first = _container("postgres", port=5432, env=("POSTGRES_USER",))
    second = _container("postgresql", env=("PGDATA",))
    with pytest.raises(errors.UsageError, match="several of its containers") as info:
        _choose(_pod(first, second))
    message = str(info.value)
    assert "postgres (port 5432; environment POSTGRES_USER; named postgres)" in message
    assert "postgresql (environment PGDATA; named postgresql)" in message
    assert message.endswith("pass --source-container NAME")
    annotated = _pod(first, second, annotations={discovery.DEFAULT_CONTAINER: "postgresql"})
    assert _choose(annotated).name == "postgresql"
    assert _choose(_pod(first, second), named="postgres").why == "--source-container"
    with pytest.raises(errors.UsageError, match=r"no such container \(it has postgres, postgresql"):
        _choose(_pod(first, second), named="pg")


def test_no_postgres_looking_container_among_several_is_refused() -> None:
    with pytest.raises(errors.UsageError, match="none of its containers declare"):
        _choose(_pod(_container("app"), _container("metrics", port=9187)))
    assert _choose(_pod(_container("app"))).why == "the pod's only container"


def test_finished_deleted_and_kots_pods_are_passed_over_with_the_reason() -> None:
    def pod(name: str, phase: str = "Running", deleting: bool = False) -> client.V1Pod:
        when = datetime.datetime.now(datetime.timezone.utc) if deleting else None
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, deletion_timestamp=when),
            status=client.V1PodStatus(phase=phase),
        )

    assert discovery.passed_over(pod("postgres-migrate-x", "Succeeded")) == "finished (Succeeded)"
    assert discovery.passed_over(pod("postgres-backup-y", "Failed")) == "finished (Failed)"
    assert discovery.passed_over(pod("postgres-0", deleting=True)) == "being deleted"
    assert discovery.passed_over(pod("kotsadm-postgres-0")) == "KOTS's own (name holds 'kots')"
    assert discovery.passed_over(pod("postgres-0")) is None
    assert discovery.is_candidate(pod("postgres-0", "Pending"))  # refused later: not running
    assert discovery.is_kots_admin_console(pod("kotsadm-7f9c-abcde"))


def test_a_container_whose_pg_dump_is_not_the_servers_major_is_refused() -> None:
    """Preflight's check of the chosen container (its pg_dump's version as the pod reported it;
    on the test cluster every container runs the same image, so the mismatch is given here)."""
    pod = kube.PostgresPod("sb", "postgres-0", "backup", "stackblitz")
    source = kubernetes_source.KubernetesSource(
        kube.Kube(), pod, "stackblitz_production", _version="14.9"
    )
    with pytest.raises(errors.ToolMissing) as info:
        source.tools(source_major=15, target_major=18)
    assert str(info.value) == (
        "pg_dump in container backup of pod sb/postgres-0 is 14.9, the server is 15: this is not "
        "the database's container; pass --source-container NAME"
    )
    kubernetes_source.KubernetesSource(kube.Kube(), pod, "db", _version="15.18").tools(
        source_major=15, target_major=18
    )


@pytest.mark.parametrize(
    ("env", "user", "password"),
    [
        ({"POSTGRES_USER": "sb", "POSTGRES_PASSWORD": "pw1"}, "sb", "pw1"),
        ({}, "postgres", ""),  # the official image's default user; no password
        ({"POSTGRES_USER_FILE": "user", "POSTGRES_PASSWORD_FILE": "password"}, "from-file", "pw 2"),
    ],
)
def test_the_pods_user_and_password_are_read_as_the_official_image_reads_them(
    tmp_path: Path, env: dict[str, str], user: str, password: str
) -> None:
    """The scripts discovery and the source run in the pod, run here by this host's sh (and
    PostgreSQL 15's pg_dump), with the container's environment given to them."""
    (tmp_path / "user").write_text("from-file\n")
    (tmp_path / "password").write_text("pw 2\n\n")  # trailing newlines dropped, as $(< f) does
    bindir = pgtools.cache_dir() / "pg" / "15" / "bin"
    base = {"PATH": f"{bindir}:/usr/bin:/bin"}
    files = {k: str(tmp_path / v) if k.endswith("_FILE") else v for k, v in env.items()}

    def run(script: str) -> str:
        return subprocess.run(
            ["sh", "-c", script], env={**base, **files}, capture_output=True, text=True, check=True
        ).stdout

    probed = run(kube._PROBE)
    assert f"sbm-user:{user}\n" in probed and "sbm-pg-dump:pg_dump (PostgreSQL) 15." in probed
    assert run(kubernetes_source.PASSWORD_SCRIPT) == password


def test_a_container_without_pg_dump_fails_the_probe_with_its_own_status() -> None:
    done = subprocess.run(["/bin/sh", "-c", kube._PROBE], env={"PATH": "/nonexistent"}, check=False)
    assert done.returncode == 97  # said as "has no pg_dump: ... pass --source-container NAME"
