"""Every CLI failure on bad input is one line naming the file and the problem, exit status 1 or 2,
and never a traceback (issue 9, section 4). Run as a user runs it: a separate process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def spendgate(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if name != "SPENDGATE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "spendgate.cli", *args], capture_output=True, text=True,
                          timeout=60, env=environment)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode in (1, 2), result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, result.stderr
    assert any(all(word in line for word in words) for line in errors), result.stderr


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(EXAMPLES, directory)
    return directory


def _sparse(path: Path, size: int) -> None:
    """A file of `size` bytes that takes no disk."""
    path.touch()
    os.truncate(path, size)


MANIFEST_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "undecodable bytes": (lambda path: path.write_bytes(b"kind: Budget\nmetadata: {name: \xff}\n"), "not UTF-8"),
    "nesting beyond any sane depth": (lambda path: path.write_text("a: " + "[" * 50_000 + "]" * 50_000),
                                      "nested deeper than 64 levels"),
    "an alias bomb": (lambda path: path.write_text("a: &a [x, x]\nb: [*a, *a]\n"), "aliases are not allowed"),
    "a file far too large": (lambda path: _sparse(path, 5 * 2**20), "larger than the limit of 4 MiB"),
    "not YAML at all": (lambda path: path.write_text("key: [unclosed\n  - what"), "InvalidYAML"),
    "a FIFO": (lambda path: os.mkfifo(path), "not a regular file"),
}


@pytest.mark.parametrize("command", ["validate", "render"])
@pytest.mark.parametrize("fault", sorted(MANIFEST_FAULTS))
def test_bad_manifests(command: str, fault: str, policies: Path) -> None:
    inject, words = MANIFEST_FAULTS[fault]
    bad = policies / "90-bad.yaml"
    inject(bad)
    refused(spendgate(command, str(policies)), "90-bad.yaml", words)


def test_a_file_where_the_policy_directory_belongs(policies: Path) -> None:
    refused(spendgate("validate", str(policies / "30-budgets.yaml")), "30-budgets.yaml", "not a directory")
    refused(spendgate("validate", str(policies / "missing")), "missing", "does not exist")


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b'{"keys": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                                     b'{"keys": [', b"[]"], ids=["undecodable", "deep", "truncated", "not an object"])
def test_a_bad_keys_file(content: bytes, policies: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_bytes(content)
    refused(spendgate("validate", str(policies), "--keys-file", str(keys)), "keys.json")


def test_a_directory_where_the_keys_file_belongs(policies: Path, tmp_path: Path) -> None:
    refused(spendgate("validate", str(policies), "--keys-file", str(tmp_path)), str(tmp_path))


def test_render_into_a_directory_or_nowhere(policies: Path, tmp_path: Path) -> None:
    refused(spendgate("render", str(policies), "--out", str(tmp_path)), str(tmp_path), "directory")
    refused(spendgate("render", str(policies), "--out", str(tmp_path / "no" / "such" / "dir" / "b.json")),
            "No such file or directory")


def test_a_bad_bundle_for_the_proxy(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(b"\x1f\x8b truncated")
    environment = {**os.environ, "ANTHROPIC_API_KEY": "test-upstream-not-a-real-key"}
    result = subprocess.run([sys.executable, "-m", "spendgate.cli", "proxy", "--bundle", str(bundle), "--port", "0",
                             "--admin-port", "0", "--state-dir", str(tmp_path / "state")],
                            capture_output=True, text=True, timeout=60, env=environment)
    refused(result, "bundle.json")
