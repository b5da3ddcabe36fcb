"""The standalone keys file: concurrent writers lose nothing, rotation expires the old key by
itself, and whatever the file is, reading it raises only KeysFileError (one line, no traceback)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendgate.adapters.keysfile import (
    MAX_KEYS_FILE_BYTES,
    KeysFile,
    KeysFileError,
    create_key,
    key_hash,
    read_keys_file,
    revoke_key,
    rotate_key,
)
from spendgate.cli import main
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.compiler import compile_policies

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WORKERS, ACTIONS = 12, 8


def _worker(keys_file: str, worker: int, out: str) -> None:
    """One process: create keys, rotate some, revoke one; every printed key and exit code to `out`."""
    results = []
    for action in range(ACTIONS):
        name = f"w{worker}-k{action}"
        argv = ["keys", "create", "--developer", f"dev-{worker}", "--cost-center", "platform", "--name", name]
        if action % 3 == 2:
            argv = ["keys", "rotate", "--name", f"w{worker}-k{action - 1}", "--grace", "1h"]
        elif action == ACTIONS - 1:
            argv = ["keys", "revoke", "--name", f"w{worker}-k0"]
        with open(os.devnull, "w") as quiet, redirect_stderr(quiet), open(f"{out}.{action}", "w") as printed, \
                redirect_stdout(printed):
            code = main([*argv, "--keys-file", keys_file, "--output", "json"])
        results.append({"argv": argv, "code": code, "printed": Path(f"{out}.{action}").read_text()})
    Path(out).write_text(json.dumps(results))


def test_concurrent_processes_lose_no_printed_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(str(keys_file), n, str(tmp_path / f"out-{n}")))
               for n in range(WORKERS)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0

    stored = {entry.hash: entry for entry in read_keys_file(keys_file).keys}
    printed = [result for n in range(WORKERS) for result in json.loads((tmp_path / f"out-{n}").read_text())]
    issued = [record for record in (json.loads(result["printed"]) for result in printed) if "key" in record]
    assert all(result["code"] == 0 for result in printed)
    assert len(issued) == WORKERS * (ACTIONS - 1)  # every create and rotate printed a key
    assert all(key_hash(record["key"]) in stored for record in issued)
    assert len(stored) == len(issued)  # and nothing else: a lost update would drop some, a race duplicate others
    revoked = {entry.name for entry in stored.values() if entry.revoked}
    assert revoked == {f"w{n}-k0" for n in range(WORKERS)}


def test_rotation_keeps_the_old_key_until_the_grace_ends(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    old = create_key(keys_file, "alice-laptop", "alice", "platform")
    new = rotate_key(keys_file, "alice-laptop", timedelta(hours=24), NOW)

    entries = {entry.hash: entry for entry in read_keys_file(keys_file).keys}
    assert entries[key_hash(new)].expiresAt is None
    assert entries[key_hash(old)].expiresAt == "2026-11-25T12:00:00Z"
    assert not entries[key_hash(old)].expired(NOW + timedelta(hours=23, minutes=59))
    assert entries[key_hash(old)].expired(NOW + timedelta(hours=24))

    newest = rotate_key(keys_file, "alice-laptop", timedelta(0), NOW + timedelta(days=2))
    names = [(entry.hash, entry.expiresAt) for entry in read_keys_file(keys_file).keys]
    # the first key expired long ago and is dropped; the second expires at once
    assert names == [(key_hash(new), "2026-11-26T12:00:00Z"), (key_hash(newest), None)]


def test_rotated_keys_share_their_name_and_owner_in_the_bundle(tmp_path: Path) -> None:
    from spendgate.api import v1alpha1 as api

    platform = api.CostCenter.model_validate({"metadata": {"name": "platform"}, "spec": {"code": "P"}})
    current = KeyEntry(hash="a" * 64, name="k", developer="alice", costCenter="platform")
    previous = current.model_copy(update={"hash": "b" * 64, "expiresAt": "2026-11-25T12:00:00Z"})
    stolen = previous.model_copy(update={"hash": "c" * 64, "developer": "mallory"})

    assert len(compile_policies([platform], [current, previous]).bundle.bundle.keys) == 2
    refused = compile_policies([platform], [current, previous, stolen])
    assert refused.bundle.bundle.keys == [] and {e.reason for e in refused.errors} == {"DuplicateKey"}
    assert "expiresAt" not in current.model_dump(mode="json")  # bundles without rotations keep their bytes


def test_revoking_also_revokes_the_rotated_out_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    create_key(keys_file, "bob", "bob", "platform")
    rotate_key(keys_file, "bob", timedelta(hours=1), NOW)
    revoke_key(keys_file, "bob")

    assert all(entry.revoked for entry in read_keys_file(keys_file).keys)
    with pytest.raises(KeysFileError, match="no active key named 'bob' to rotate"):
        rotate_key(keys_file, "bob", timedelta(hours=1), NOW)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def _huge(path: Path) -> None:
    with path.open("wb") as handle:  # sparse: costs no disk
        handle.truncate(MAX_KEYS_FILE_BYTES + 1)


def _loop(path: Path) -> None:
    path.symlink_to(path)


BAD_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "directory": (Path.mkdir, "not a regular file (a directory)"),
    "fifo": (_fifo, "not a regular file (a FIFO)"),
    "socket": (_socket, "not a regular file (a socket)"),
    "symlink loop": (_loop, "cannot be read"),
    "not utf-8": (lambda p: p.write_bytes(b'{"keys": ["\xff\xfe"]}'), "not UTF-8 text (byte 0xff at offset 11)"),
    "not json": (lambda p: p.write_text("keys: [alice]\n"), "not JSON: Expecting value at line 1 column 1"),
    "truncated": (lambda p: p.write_text('{"keys": [{"hash": '), "not JSON"),
    "deep": (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "JSON nested too deeply"),
    "wrong shape": (lambda p: p.write_text('{"keys": [{"hash": 5}]}'), "not a valid keys file"),
    "a list": (lambda p: p.write_text("[]"), "not a valid keys file"),
    "empty": (lambda p: p.write_text(""), "empty"),
    "too large": (_huge, "larger than 16 MiB"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_keys_file_is_one_line_naming_the_file(tmp_path: Path, case: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make, problem = BAD_FILES[case]
    keys_file = tmp_path / "keys.json"
    make(keys_file)

    with pytest.raises(KeysFileError) as raised:
        read_keys_file(keys_file)
    assert str(raised.value).startswith(f"{keys_file}: ") and problem in str(raised.value)

    for argv in (["keys", "list"], ["keys", "create", "--developer", "d", "--cost-center", "c"],
                 ["validate", str(tmp_path / "none")]):
        assert main([*argv, "--keys-file", str(keys_file)]) in (1, 2)
        err = capsys.readouterr().err
        if argv[0] == "keys":
            assert err.count("\n") == 1 and err.startswith(f"error: {keys_file}: ") and "Traceback" not in err


def test_the_cli_outside_python_prints_no_traceback(tmp_path: Path) -> None:
    import subprocess

    keys_file = tmp_path / "keys.json"
    keys_file.write_bytes(b"\x00\xff" * 10)
    result = subprocess.run([sys.executable, "-m", "spendgate.cli", "keys", "list", "--keys-file", str(keys_file)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: {keys_file}: not UTF-8 text (byte 0xff at offset 1)\n"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                       max_size=4), max_leaves=30)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | JSON.map(lambda value: json.dumps({"keys": [value]}).encode())
       | JSON.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_read_as_keys_or_as_keys_file_error(tmp_path: Path, data: bytes) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_bytes(data)
    try:
        assert isinstance(read_keys_file(keys_file), KeysFile)
    except KeysFileError as error:
        assert str(error).startswith(str(keys_file)) and "\n" not in str(error)
