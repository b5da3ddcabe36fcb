"""Virtual keys: one per developer, mapped to a developer and a cost center.

Only the SHA-256 of a key is ever stored (keys file, bundle, Secrets' derived data). The key is
256 bits from the OS's CSPRNG, so a fast hash is enough: there is nothing to brute-force, and the
proxy can hash on every request for about a microsecond.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spendgate.policy.bundle import KeyEntry

KEY_PREFIX = "sk-sg-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeysFile(BaseModel):
    """The standalone keys file beside the policies: hashes only."""

    model_config = ConfigDict(extra="forbid")
    apiVersion: str = "spendgate.io/v1alpha1"
    kind: str = "VirtualKeyList"
    keys: list[KeyEntry] = Field(default_factory=list)


class KeysFileError(ValueError):
    pass


def read_keys_file(path: Path) -> KeysFile:
    if not path.exists():
        return KeysFile()
    try:
        return KeysFile.model_validate_json(path.read_text())
    except ValidationError as error:
        raise KeysFileError(f"{path}: not a valid keys file: {error.errors()[0]['msg']} "
                            f"at {'.'.join(map(str, error.errors()[0]['loc']))}") from error


def write_keys_file(path: Path, keys: KeysFile) -> None:
    """Atomically: a crash mid-write never leaves a truncated keys file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(keys.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".keys-") as handle:
        handle.write(text)
        temporary = Path(handle.name)
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def create_key(path: Path, name: str, developer: str, cost_center: str) -> str:
    """Add a key to the keys file and return its plaintext, which is shown once and never stored."""
    keys = read_keys_file(path)
    if any(entry.name == name for entry in keys.keys):
        raise KeysFileError(f"{path}: a key named {name!r} exists already; revoke it or pick another name")
    plaintext = new_key()
    entry = KeyEntry(hash=key_hash(plaintext), name=name, developer=developer, costCenter=cost_center)
    write_keys_file(path, KeysFile(keys=[*keys.keys, entry]))
    return plaintext


def revoke_key(path: Path, name: str) -> None:
    keys = read_keys_file(path)
    if not any(entry.name == name for entry in keys.keys):
        raise KeysFileError(f"{path}: no key named {name!r}")
    revoked = [entry.model_copy(update={"revoked": True}) if entry.name == name else entry for entry in keys.keys]
    write_keys_file(path, KeysFile(keys=revoked))
