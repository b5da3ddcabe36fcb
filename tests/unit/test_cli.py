"""The `spendgate` command for people and CI: clear output, clear errors, exit codes that mean something."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendgate.adapters.keysfile import key_hash, read_keys_file
from spendgate.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    assert "2 cost centers, 3 budgets, 1 routing policies, 0 keys; 0 errors" in capsys.readouterr().out


def test_validate_reports_every_error_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("""
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {name: b, namespace: t}
spec: {costCenter: ghost, scope: {kind: CostCenter}, limitUSD: "5", window: {period: Daily}}
---
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {name: loop}
spec: {code: L, parent: loop}
""")
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Budget t/b (spec.costCenter): UnknownCostCenter" in err
    assert "CostCenter loop (spec.parent): HierarchyCycle" in err


def test_render_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    assert main(["render", str(EXAMPLES), "--out", str(first)]) == 0
    assert main(["render", str(EXAMPLES), "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_bytes())["bundle"]["schemaVersion"] == "spendgate.io/bundle/v1"


def test_keys_lifecycle_stores_only_hashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_file = tmp_path / "keys.json"
    assert main(["keys", "create", "--developer", "alice", "--cost-center", "platform",
                 "--keys-file", str(keys_file)]) == 0
    plaintext = capsys.readouterr().out.strip()
    assert plaintext.startswith("sk-sg-")
    assert plaintext not in keys_file.read_text()
    assert read_keys_file(keys_file).keys[0].hash == key_hash(plaintext)
    assert keys_file.stat().st_mode & 0o077 == 0

    assert main(["keys", "create", "--developer", "alice", "--cost-center", "platform",
                 "--keys-file", str(keys_file)]) == 2
    assert "a key named 'alice' exists already" in capsys.readouterr().err

    assert main(["keys", "revoke", "--name", "alice", "--keys-file", str(keys_file)]) == 0
    assert read_keys_file(keys_file).keys[0].revoked
    assert main(["keys", "revoke", "--name", "bob", "--keys-file", str(keys_file)]) == 2


def test_the_default_keys_file_beside_the_policies_is_not_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for manifest in EXAMPLES.glob("*.yaml"):
        (policies / manifest.name).write_text(manifest.read_text())
    main(["keys", "create", "--developer", "bob", "--cost-center", "platform", "--keys-file",
          str(policies / "keys.json")])
    capsys.readouterr()
    assert main(["validate", str(policies), "--keys-file", str(policies / "keys.json")]) == 0
    assert "1 keys; 0 errors" in capsys.readouterr().out


def test_compiled_keys_join_the_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_file = tmp_path / "keys.json"
    main(["keys", "create", "--developer", "bob", "--cost-center", "platform", "--keys-file", str(keys_file)])
    capsys.readouterr()
    assert main(["validate", str(EXAMPLES), "--keys-file", str(keys_file)]) == 0
    assert "1 keys; 0 errors" in capsys.readouterr().out


def test_corrupt_keys_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text('{"keys": [{"hash": 5}]}')
    assert main(["keys", "list", "--keys-file", str(keys_file)]) == 2
    assert f"{keys_file}: not a valid keys file" in capsys.readouterr().err


def test_crds_check_detects_staleness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "generate", "--out", str(tmp_path)]) == 0
    assert main(["crds", "check", "--out", str(tmp_path)]) == 0
    (tmp_path / "budgets.spendgate.io.yaml").write_text("edited by hand\n")
    assert main(["crds", "check", "--out", str(tmp_path)]) == 1
    assert "budgets.spendgate.io.yaml is stale" in capsys.readouterr().err
