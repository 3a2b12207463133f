"""Stage 5, encryption key: StackBlitz's key read from the KOTS config, recorded by fingerprint
only, and written to --key-out (mode 0600) for the new installation's "Custom Key" field.

In Kubernetes mode the config comes from `kubectl kots get config --current --decrypt` (the
deployed sequence, which is not always the newest), unless --kots-config-file gives it.
"""

from __future__ import annotations

import pytest

from checks import errors, kots, kots_cli
from checks.evidence import Run
from checks.kubernetes import KubernetesSource
from fixtures.options import Settings
from fixtures.run import Sides

pytestmark = [
    pytest.mark.stage("encryption key"),
    # The key is part of a migration's "done": the reinstalled StackBlitz needs it.
    pytest.mark.modes("migrate", "preflight-only", why="a verify-only run compares data only"),
    pytest.mark.flag(
        "no_key", on=False, why="--no-key: StackBlitz stays installed as it is, with its key"
    ),
]


def _config_text(sides: Sides, settings: Settings, run: Run) -> str:
    if sides.kots_config_file is not None:
        run.kots["config"] = str(sides.kots_config_file)
        return sides.kots_config_file.read_text()
    source = sides.source
    if not isinstance(source, KubernetesSource):
        raise errors.KeyNotFound(
            "no --kots-config-file: save `kubectl kots get config -n NS --appslug stackblitz "
            "--current --decrypt` to a file (mode 0600) and pass it, or pass --no-key when "
            "StackBlitz stays installed as it is"
        )
    namespace = source.pod.namespace
    listed = kots_cli.versions(source.kube, namespace, settings.kots_app)
    deployed = listed.deployed
    run.kots.update(
        versions_listed=f"{listed.rows} in {listed.pages} page(s)",
        config=f"kubectl kots get config -n {namespace} --appslug {settings.kots_app} "
        + (
            f"--sequence {settings.kots_sequence}"
            if settings.kots_sequence is not None
            else "--current"
        ),
    )
    if deployed is None:
        # The config names its sequence itself (--current: KOTS's deployed one, or the one asked
        # for): the versions list only documents it, so it cannot fail the stage.
        run.kots["warning"] = (
            f"no row of `kubectl kots get versions {settings.kots_app}` says deployed: the "
            "deployed sequence is not recorded; the config is KOTS's own answer"
        )
    else:
        run.kots.update(
            deployed_sequence=deployed.sequence,
            deployed_version=deployed.version_label,
            deployed_at=deployed.deployed_at,
        )
    return kots_cli.config_values(
        source.kube, namespace, settings.kots_app, sequence=settings.kots_sequence
    )


def test_encryption_key_is_found(sides: Sides, settings: Settings, run: Run) -> None:
    key = kots.encryption_key(_config_text(sides, settings, run))
    run.secrets.add(key.value)
    run.encryption_key = key.evidence()
    if settings.expect_key_fingerprint:  # the reinstall check
        kots.check_carried_forward(key, settings.expect_key_fingerprint)
        run.encryption_key["carried_forward"] = True
    if settings.key_out:
        kots.write_key(key, settings.key_out)
        run.encryption_key["written_to"] = str(settings.key_out)
