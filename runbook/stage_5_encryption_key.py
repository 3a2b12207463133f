"""Stage 5, encryption key: StackBlitz's key read from the KOTS config, recorded by fingerprint
only, and written to --key-out (mode 0600) for the new installation's "Custom Key" field."""

from __future__ import annotations

from pathlib import Path

import pytest

from checks import kots
from checks.evidence import Run
from fixtures.options import Settings
from fixtures.run import Sides

pytestmark = pytest.mark.stage("encryption key")


def test_encryption_key_is_found(sides: Sides, settings: Settings, run: Run) -> None:
    config: Path | None = sides.kots_config_file
    if config is None:
        pytest.skip(
            "no --kots-config-file: save `kubectl kots get config -n NS --appslug stackblitz "
            "--current --decrypt` to a file (mode 0600) and pass it"
        )
    key = kots.encryption_key(config.read_text())
    run.secrets.add(key.value)
    run.encryption_key = key.evidence()
    if settings.key_out:
        kots.write_key(key, settings.key_out)
        run.encryption_key["written_to"] = str(settings.key_out)
