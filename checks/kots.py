"""Reads StackBlitz's encryption key from `kubectl kots get config` output (ConfigValues YAML).

Parsed as YAML, never grepped: the seed's `grep -A1 stackblitz_enc` can print an item's
`default` (which sorts before `value`) instead of its value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from checks import errors, private

SETTINGS_ITEM = "stackblitz_enc_key_settings"
GENERATED = "stackblitz_default_generated"
GENERATED_ITEM = "stackblitz_enc_key"
CUSTOM_ITEM = "stackblitz_enc_custom_key"


@dataclass(frozen=True)
class EncryptionKey:
    item: str  # the config item that holds the key
    settings: str  # the effective value of stackblitz_enc_key_settings
    value: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Short enough to compare by eye, useless for recovering the key."""
        return "sha256:" + hashlib.sha256(self.value.encode()).hexdigest()[:16]

    def evidence(self) -> dict[str, str]:
        return {"item": self.item, "settings": self.settings, "fingerprint": self.fingerprint}


def config_values(text: str) -> dict[str, dict[str, object]]:
    """spec.values of a kots.io/v1beta1 ConfigValues document."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise errors.KeyNotFound(f"the KOTS config is not valid YAML: {_one_line(e)}") from e
    if not isinstance(doc, dict) or doc.get("kind") != "ConfigValues":
        first = text.strip().splitlines()[0][:200] if text.strip() else "(empty)"
        raise errors.KeyNotFound(
            f"the KOTS config is not a kots.io/v1beta1 ConfigValues document (it starts: {first!r})"
        )
    values = (doc.get("spec") or {}).get("values") or {}
    if not isinstance(values, dict):
        raise errors.KeyNotFound("the KOTS config's spec.values is not a mapping")
    return {str(k): v if isinstance(v, dict) else {} for k, v in values.items()}


def _value(items: dict[str, dict[str, object]], name: str) -> str:
    raw = items.get(name, {}).get("value")
    return "" if raw is None else str(raw)


def encryption_key(text: str) -> EncryptionKey:
    """The key StackBlitz encrypts with, chosen as the seed documents.

    The settings item falls back to its default (an operator who never touched "Key Settings"
    has the default); the key items never do: a key is only ever an item's `value`.
    """
    items = config_values(text)
    if SETTINGS_ITEM not in items:
        raise errors.KeyNotFound(
            f"the KOTS config has no {SETTINGS_ITEM} item: is this the StackBlitz app's config "
            "(--appslug stackblitz)?"
        )
    settings = _value(items, SETTINGS_ITEM) or str(items[SETTINGS_ITEM].get("default") or "")
    item = GENERATED_ITEM if settings == GENERATED else CUSTOM_ITEM
    value = _value(items, item).strip()
    if not value:
        raise errors.KeyNotFound(
            f"{SETTINGS_ITEM} is {settings!r}, so the key is {item}, which has no value in the "
            "KOTS config: check the app's Key Settings in the admin console"
        )
    return EncryptionKey(item, settings, value)


def write_key(key: EncryptionKey, path: Path) -> None:
    """Write the key itself, readable by its owner only; never over an existing file."""
    try:
        out = private.open_private(path, "w", exclusive=True)
    except FileExistsError as e:
        raise errors.UsageError(f"--key-out {path} exists: move it away or pick a new path") from e
    with out:
        out.write(key.value + "\n")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def check_carried_forward(key: EncryptionKey, expected_fingerprint: str) -> None:
    """The reinstall check: the new installation must use a custom key, the old one."""
    if key.settings == GENERATED:
        raise errors.KeyNotFound(
            f"{SETTINGS_ITEM} is {GENERATED}: the new installation generated a key of its own; "
            "select Custom Key and paste the old key before it touches the migrated data"
        )
    if key.fingerprint != expected_fingerprint:
        raise errors.KeyNotFound(
            f"the custom key's fingerprint is {key.fingerprint}, not {expected_fingerprint}: "
            "paste the key from the migration's --key-out file"
        )
