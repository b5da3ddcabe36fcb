"""Virtual keys: one per developer, mapped to a developer and a cost center.

Only the SHA-256 of a key is ever stored (keys file, bundle, Secrets' derived data). The key is
256 bits from the OS's CSPRNG, so a fast hash is enough: there is nothing to brute-force, and the
proxy can hash on every request for about a microsecond.

The keys file is shared by people (`spendgate keys ...`, possibly several at once) and by the
proxy, which re-reads it whenever it changes. So every change is a locked read-modify-write that
lands with an atomic rename after an fsync (a reader sees the old file or the new one, never half
of one, and a key printed after its change returned is on disk), and reading raises nothing but
KeysFileError, whatever the file turns out to be: the proxy then keeps its last good bundle.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spendgate.logic.windows import rfc3339
from spendgate.policy.bundle import KeyEntry

KEY_PREFIX = "sk-sg-"
# 16 MiB is about 80,000 keys; anything larger is not a keys file, and reading it would only
# cost the proxy memory.
MAX_KEYS_FILE_BYTES = 16 * 1024 * 1024


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
    """A keys file that cannot be used; the message names the file and the problem (never a key)."""


def read_keys_file(path: Path) -> KeysFile:
    """The keys file, or an empty one if it does not exist. Raises only KeysFileError."""
    try:
        if not os.path.lexists(path):
            return KeysFile()
        return _parse(path, _read_bytes(path))
    except KeysFileError:
        raise
    except Exception as error:  # whatever else goes wrong, a caller must be able to keep its last good state
        raise KeysFileError(f"{path}: cannot be read: {type(error).__name__}: {error}") from error


def _read_bytes(path: Path) -> bytes:
    try:
        _require_regular(path, os.stat(path).st_mode)  # a socket or device may refuse open() itself
        with open(path, "rb", opener=_nonblocking) as handle:
            _require_regular(path, os.fstat(handle.fileno()).st_mode)  # the file we opened, not one swapped in
            data = handle.read(MAX_KEYS_FILE_BYTES + 1)
    except OSError as error:
        raise KeysFileError(f"{path}: cannot be read: {error.strerror or error}") from error
    if len(data) > MAX_KEYS_FILE_BYTES:
        raise KeysFileError(f"{path}: larger than {MAX_KEYS_FILE_BYTES // (1024 * 1024)} MiB; not a keys file")
    return data


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise KeysFileError(f"{path}: not a regular file ({_file_type(mode)})")


def _nonblocking(path: str, flags: int) -> int:
    """Opening a FIFO for reading would wait for a writer; O_NONBLOCK lets fstat() refuse it instead."""
    return os.open(path, flags | os.O_NONBLOCK)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def _parse(path: Path, data: bytes) -> KeysFile:
    if not data.strip():  # a missing file has no keys yet; an empty one is a broken write, not "no keys"
        raise KeysFileError(f"{path}: empty; a keys file is a JSON object with a list of keys")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = f"0x{data[error.start]:02x}"
        raise KeysFileError(f"{path}: not UTF-8 text (byte {byte} at offset {error.start})") from error
    try:
        raw = json.loads(text)
    except RecursionError as error:
        raise KeysFileError(f"{path}: not a keys file: JSON nested too deeply") from error
    except json.JSONDecodeError as error:
        raise KeysFileError(f"{path}: not JSON: {error.msg} at line {error.lineno} column {error.colno}") from error
    try:
        return KeysFile.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = json.dumps(".".join(map(str, first["loc"])))[1:-1][:200] or "the top level"  # one line, always
        raise KeysFileError(f"{path}: not a valid keys file: {first['msg']} at {where}") from error


def write_keys_file(path: Path, keys: KeysFile) -> None:
    """Atomically and durably: a reader sees the old file or the new one, and after a crash the
    file is one of the two, never truncated."""
    text = json.dumps(keys.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".keys-") as handle:
        temporary = Path(handle.name)
        try:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o600)
            os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    temporary.replace(path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """The rename itself is durable only once the directory is synced."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for one read-modify-write. It is taken on a lock file beside the keys file,
    because the keys file itself is replaced by every write (a lock on it would lock the old inode)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise KeysFileError(f"{path}: cannot be locked for writing: {error.strerror or error}") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _update(path: Path, change: Callable[[list[KeyEntry]], list[KeyEntry]]) -> None:
    with _locked(path):
        keys = read_keys_file(path)
        try:
            write_keys_file(path, keys.model_copy(update={"keys": change(keys.keys)}))
        except OSError as error:
            raise KeysFileError(f"{path}: cannot be written: {error.strerror or error}") from error


def _current(keys: list[KeyEntry], name: str) -> KeyEntry | None:
    """The key that is in force under `name` (a rotated-out key has an expiry; a revoked one is dead)."""
    return next((k for k in keys if k.name == name and k.expiresAt is None and not k.revoked), None)


def create_key(path: Path, name: str, developer: str, cost_center: str) -> str:
    """Add a key to the keys file and return its plaintext, which is shown once and never stored."""
    plaintext = new_key()

    def add(keys: list[KeyEntry]) -> list[KeyEntry]:
        if any(entry.name == name for entry in keys):
            raise KeysFileError(f"{path}: a key named {name!r} exists already; revoke it or pick another name")
        return [*keys, KeyEntry(hash=key_hash(plaintext), name=name, developer=developer, costCenter=cost_center)]

    _update(path, add)
    return plaintext


def rotate_key(path: Path, name: str, grace: timedelta, now: datetime) -> str:
    """Replace the key named `name` with a new one, which is returned (shown once). The old key
    stays valid until now + grace: its entry gets `expiresAt`, which the proxy checks on every
    request, so it stops working then without anyone touching the file again. Rotated-out keys
    that have expired already are dropped."""
    plaintext = new_key()
    expires = rfc3339(now + grace)

    def rotate(keys: list[KeyEntry]) -> list[KeyEntry]:
        current = _current(keys, name)
        if current is None:
            raise KeysFileError(f"{path}: no active key named {name!r} to rotate")
        kept = [k for k in keys if k is not current and not (k.name == name and k.expired(now))]
        successor = current.model_copy(update={"hash": key_hash(plaintext)})
        return [*kept, current.model_copy(update={"expiresAt": expires}), successor]

    _update(path, rotate)
    return plaintext


def revoke_key(path: Path, name: str) -> None:
    """Revoke the key named `name`, and any rotated-out key of that name still in its grace period."""

    def revoke(keys: list[KeyEntry]) -> list[KeyEntry]:
        if not any(entry.name == name for entry in keys):
            raise KeysFileError(f"{path}: no key named {name!r}")
        return [entry.model_copy(update={"revoked": True}) if entry.name == name else entry for entry in keys]

    _update(path, revoke)
