"""The encryption key comes from the parsed ConfigValues, never from an item's default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from checks import errors, kots
from fixtures.kots_sample import kots_config_values


def test_generated_key_is_the_value_not_the_default() -> None:
    text = kots_config_values("the-real-key")
    doc = yaml.safe_load(text)
    default = doc["spec"]["values"]["stackblitz_enc_key"]["default"]
    # What the seed's `grep -A1 stackblitz_enc` prints first for this item is the default.
    lines = text.splitlines()
    after = lines[lines.index("    stackblitz_enc_key:") + 1]
    assert default in after
    key = kots.encryption_key(text)
    assert (key.item, key.value) == ("stackblitz_enc_key", "the-real-key")


def test_custom_key_is_used_when_selected() -> None:
    key = kots.encryption_key(kots_config_values("generated", custom_key="custom-one"))
    assert (key.item, key.value, key.settings) == (
        "stackblitz_enc_custom_key",
        "custom-one",
        "stackblitz_custom_key",
    )


def test_settings_default_applies_when_never_changed() -> None:
    doc = yaml.safe_load(kots_config_values("k1"))
    del doc["spec"]["values"]["stackblitz_enc_key_settings"]["value"]
    assert kots.encryption_key(yaml.safe_dump(doc)).item == "stackblitz_enc_key"


@pytest.mark.parametrize("value", ["", None, "   "])
def test_empty_custom_key_fails(value: str | None) -> None:
    doc = yaml.safe_load(kots_config_values("k1", custom_key="x"))
    doc["spec"]["values"]["stackblitz_enc_custom_key"]["value"] = value
    with pytest.raises(errors.KeyNotFound, match="stackblitz_enc_custom_key, which has no value"):
        kots.encryption_key(yaml.safe_dump(doc))


def test_key_with_only_a_default_fails() -> None:
    doc = yaml.safe_load(kots_config_values("k1"))
    del doc["spec"]["values"]["stackblitz_enc_key"]["value"]
    with pytest.raises(errors.KeyNotFound, match="has no value"):
        kots.encryption_key(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    "text",
    [
        "Error: app stackblitz not found\n",
        "",
        "apiVersion: v1\nkind: ConfigMap\n",
        "spec: [unclosed\n",
    ],
)
def test_not_a_config_values_document_fails(text: str) -> None:
    with pytest.raises(errors.KeyNotFound):
        kots.encryption_key(text)


def test_config_of_another_app_fails() -> None:
    doc = {
        "apiVersion": "kots.io/v1beta1",
        "kind": "ConfigValues",
        "spec": {"values": {"hostname": {"value": "x"}}},
    }
    with pytest.raises(errors.KeyNotFound, match="appslug stackblitz"):
        kots.encryption_key(yaml.safe_dump(doc))


def test_fingerprint_is_short_and_not_the_key() -> None:
    key = kots.encryption_key(kots_config_values("s3cret-key-value"))
    assert key.fingerprint.startswith("sha256:") and len(key.fingerprint) == 23
    assert "s3cret" not in key.fingerprint and "s3cret" not in repr(key)


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    key = kots.encryption_key(kots_config_values("k-private"))
    out = tmp_path / "key"
    kots.write_key(key, out)
    assert out.read_text() == "k-private\n"
    assert out.stat().st_mode & 0o777 == 0o600
    with pytest.raises(errors.UsageError, match="exists"):
        kots.write_key(key, out)
    assert out.read_text() == "k-private\n"


def test_reinstall_check_wants_the_old_key_as_custom_key() -> None:
    old = kots.encryption_key(kots_config_values("the-old-key"))
    carried = kots.encryption_key(kots_config_values("new-generated", custom_key="the-old-key"))
    kots.check_carried_forward(carried, old.fingerprint)
    with pytest.raises(errors.KeyNotFound, match="generated a key of its own"):
        kots.check_carried_forward(old, old.fingerprint)
    other = kots.encryption_key(kots_config_values("x", custom_key="another-key"))
    with pytest.raises(errors.KeyNotFound, match="paste the key from the migration"):
        kots.check_carried_forward(other, old.fingerprint)
