"""Stage 1, preflight: everything that could stop the migration, checked before anything changes.

Every check runs even when another fails, so one run lists every refusal. The last one restores
the schema into a scratch database on the target (checks.scratch) and drops it again: the only
thing preflight creates anywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from checks import approval, errors, host_needs, kube, marker, preflight, rowdigest, scratch, server
from checks.direct import DirectSource
from checks.endpoint import Endpoint
from checks.evidence import Run
from checks.kubernetes import KubernetesSource
from checks.restore import MAINTENANCE_DB
from checks.source import Source
from fixtures.options import Settings
from fixtures.run import Sides

pytestmark = pytest.mark.stage("preflight")
CHANGES = pytest.mark.modes("migrate", "preflight-only")  # checks that matter only for a change


def test_source_database_is_reachable(
    source: Source, source_info: server.ServerInfo, settings: Settings, run: Run
) -> None:
    with source.connect() as conn:
        db = server.database(conn, settings.database)
    if db is None:
        raise errors.Refused(f"the source has no database {settings.database}: check --database")
    run.preflight["source_database"] = {
        "encoding": db.encoding,
        "collate": db.collate,
        "ctype": db.ctype,
        "locale_provider": db.locale_provider,
        "size_bytes": db.size_bytes,
    }


def test_target_is_reachable(target_info: server.ServerInfo, run: Run) -> None:
    assert run.target["version"] == target_info.version


def test_source_and_target_are_different_servers(
    source_info: server.ServerInfo, target_info: server.ServerInfo
) -> None:
    preflight.not_same_server(source_info, target_info)


def test_target_is_not_older_than_source(
    source_info: server.ServerInfo, target_info: server.ServerInfo
) -> None:
    preflight.target_not_older(source_info, target_info)


def test_row_digest_is_chosen(
    row_digest: rowdigest.RowDigest, run: Run, say: Callable[[str], None]
) -> None:
    """Both servers hash a probe row through the fast row digest's expressions: when they agree,
    verification uses it on both, else MD5 on both (correct, slower). Decided here, before the
    copy, as --verify-during-copy digests while it runs; the evidence says which and why."""
    assert run.row_digest is not None
    if row_digest is not rowdigest.FAST:
        say(f"row digest: {run.row_digest.why}")


@CHANGES
def test_dump_and_restore_programs_are_installed(
    source: Source,
    source_info: server.ServerInfo,
    target_info: server.ServerInfo,
    sides: Sides,
    settings: Settings,
    run: Run,
) -> None:
    """Direct mode: pg_dump, pg_restore and psql on this host (where it looked and the packages
    to install, when they are missing). Kubernetes mode: the pod's own, and here only kubectl
    and, when the key comes from KOTS, its plugin."""
    majors = {"source_major": source_info.major, "target_major": target_info.major}
    if isinstance(source, DirectSource):
        found = source.tools(**majors)
        run.preflight["host_programs"] = host_needs.direct(found, source.pg_bindir)
    elif isinstance(source, KubernetesSource):
        source.tools(**majors)
        kots = not settings.no_key and sides.kots_config_file is None
        run.preflight["host_programs"] = host_needs.kubernetes(kots=kots)
    run.tools = source.tool_versions()


@CHANGES
def test_target_user_can_create_databases(target: Endpoint, target_info: server.ServerInfo) -> None:
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        preflight.target_can_create_databases(conn, conn.info.user)


@CHANGES
def test_target_user_may_create_source_extensions(
    source: Source, target: Endpoint, target_info: server.ServerInfo, run: Run
) -> None:
    """Installed, allow-listed, and trusted or created by a user allowed to: superuser, or the
    managed service's admin role."""
    with source.connect() as conn:
        used = server.extensions(conn)
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        rights = server.extension_rights(conn)
        user = conn.info.user
    run.preflight["source_extensions"] = used
    run.preflight["target_extension_rights"] = rights.describe()
    preflight.extensions_creatable(used, rights, user)


@CHANGES
def test_source_encoding_and_locale_are_usable_on_target(
    source: Source, target: Endpoint, target_info: server.ServerInfo, settings: Settings
) -> None:
    with source.connect() as conn:
        db = server.database(conn, settings.database)
    assert db is not None, f"no database {settings.database} on the source"
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        preflight.locale_usable(db, conn)


@CHANGES
def test_workdir_has_room_for_the_dump(
    source: Source, source_info: server.ServerInfo, settings: Settings, run: Run
) -> None:
    with source.connect() as conn:
        db = server.database(conn, settings.database)
    assert db is not None, f"no database {settings.database} on the source"
    needed = preflight.dump_bytes_bound(db.size_bytes, settings.method)
    free = preflight.free_space(settings.workdir, needed)
    run.preflight["workdir"] = {
        "path": str(settings.workdir),
        "free_bytes": free,
        "needed_bytes": needed,
    }


@CHANGES
def test_target_database_is_absent_or_may_be_dropped(
    target: Endpoint, target_info: server.ServerInfo, settings: Settings, run: Run
) -> None:
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        found = marker.state(conn, settings.database)
    mark = found[1] if found and marker.is_ours(found[1]) else None
    run.preflight["target_database"] = preflight.target_database_state(
        _target_tables(target, settings.database),
        settings.database,
        allow_drop=settings.allow_drop_target,
        unverified=mark,
    )


@pytest.mark.modes("verify-only")
def test_target_database_exists(
    target: Endpoint, target_info: server.ServerInfo, settings: Settings
) -> None:
    if _target_tables(target, settings.database) is None:
        raise errors.Refused(
            f"the target has no database {settings.database} to verify: run the migration first"
        )


def test_no_other_sessions_use_the_source_database(
    source: Source, source_info: server.ServerInfo, settings: Settings, run: Run
) -> None:
    with source.connect() as conn:
        sessions = server.other_sessions(conn, settings.database)
    run.preflight["other_source_sessions"] = len(sessions)
    # With --stop-app the sessions are StackBlitz's own: the dump stage stops it and checks again.
    stopping = settings.stop_app and isinstance(source, KubernetesSource)
    preflight.other_sessions(
        sessions, settings.database, allow=settings.allow_active_connections or stopping
    )


def _target_tables(target: Endpoint, database: str) -> int | None:
    with target.connect(dbname=MAINTENANCE_DB) as conn:
        if server.database(conn, database) is None:
            return None
    with target.connect(dbname=database) as conn:
        return server.user_table_count(conn)


@pytest.mark.sources(
    "kubernetes", why="direct mode: stop StackBlitz yourself; other sessions are checked above"
)
def test_stackblitz_workloads_are_listed(source: Source, settings: Settings, run: Run) -> None:
    """The write freeze starts here: which workloads could write to the database."""
    assert isinstance(source, KubernetesSource)
    workloads = kube.app_workloads(source.kube, source.pod.namespace)
    run.workloads = [
        {
            "kind": w.kind,
            "name": w.name,
            "replicas": w.replicas,
            "restore_command": kube.restore_command(source.pod.namespace, w),
        }
        for w in workloads
    ]


@pytest.mark.modes("migrate", why="--preflight-evidence belongs to the migration run")
@pytest.mark.flag(
    "preflight_evidence", why="no --preflight-evidence: not compared with an approved preflight"
)
def test_facts_match_the_approved_preflight(
    source: Source,
    source_info: server.ServerInfo,
    target_info: server.ServerInfo,
    settings: Settings,
    run: Run,
) -> None:
    """The change was approved on a preflight-only run: same servers, majors and extensions, and
    a database at most approval.GROWTH larger, or the approval no longer holds."""
    assert settings.preflight_evidence
    approved, run.approved_preflight = approval.load(settings.preflight_evidence)
    with source.connect() as conn:
        db = server.database(conn, settings.database)
        extensions = server.extensions(conn)
    now = approval.Facts(
        database=settings.database,
        source_server=approval.server_key(run.source),
        target_server=approval.server_key(run.target),
        source_major=source_info.major,
        target_major=target_info.major,
        size_bytes=db.size_bytes if db else 0,
        extensions=frozenset(extensions),
    )
    approval.check(approved, now, settings.preflight_evidence)


@CHANGES
def test_scratch_databases_of_earlier_runs_are_dropped(
    target: Endpoint, target_info: server.ServerInfo, run: Run
) -> None:
    """A run killed during its scratch restore could not drop its scratch database."""
    run.preflight["scratch_leftovers"] = scratch.drop_leftovers(target) or "none"


@CHANGES
def test_schema_restores_on_target(
    source: Source,
    target: Endpoint,
    target_info: server.ServerInfo,
    settings: Settings,
    run: Run,
    say: Callable[[str], None],
) -> None:
    """The source's schema, no rows, restored into a scratch database on the target as the
    restore will restore it (same user, flags and programs), then dropped: whatever the target
    refuses, it refuses now, before StackBlitz is stopped."""
    refused = [c.name for c in run.checks if c.stage == "preflight" and c.outcome == "failed"]
    if refused:
        pytest.skip(
            f"not tried while an earlier preflight check refuses ({', '.join(refused)}): fix "
            "that, then run --preflight-only again"
        )
    with source.connect() as conn:
        db = server.database(conn, settings.database)
    assert db is not None, f"no database {settings.database} on the source"
    say(f"restoring the source's schema into {scratch.name_for(settings.stamp)} on the target")
    try:
        result = scratch.restore_schema(
            source,
            target,
            db,
            stamp=settings.stamp,
            target_major=target_info.major,
            workdir=settings.workdir,
        )
    except BaseException as e:
        notes = getattr(e, "__notes__", [])
        if notes:  # interrupted: what became of the scratch database
            run.preflight["scratch_restore"] = {
                "interrupted": getattr(e, "signame", type(e).__name__),  # checks.interrupt
                "cleanup": "; ".join(notes),
            }
        raise
    run.preflight["scratch_restore"] = result.evidence()
