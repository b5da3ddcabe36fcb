"""The synthetic ledger: reproducible, in the real format, realistic in the ways DESIGN.md names, and decided by
the policies it was made for."""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from spendgate.adapters.ledgerfiles import read_ledgers
from spendgate.adapters.policyfiles import compile_directory
from spendgate.cli import main
from spendgate.logic.ledgerrecord import LedgerRecord
from spendgate.logic.pricing import PriceBook
from spendgate.logic.synth import SynthSettings, developers, synthesize, top_decile_share, zipf_exponent
from spendgate.policy.bundle import SignedBundle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
SETTINGS = SynthSettings(start=date(2026, 11, 2), days=14, developers=30, seed=11)


@pytest.fixture(scope="module")
def bundle() -> SignedBundle:
    return compile_directory(EXAMPLES).bundle


@pytest.fixture(scope="module")
def records(bundle: SignedBundle) -> list[LedgerRecord]:
    return list(synthesize(bundle, SETTINGS))


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    arguments = ["ledger", "synth", "--days", "3", "--developers", "8", "--start", "2026-11-02",
                 "--policies", str(EXAMPLES)]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main([*arguments, "--seed", seed, "--out", str(tmp_path / f"{name}.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_lines_are_the_real_format_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl.gz"
    assert main(["ledger", "synth", "--days", "2", "--developers", "5", "--start", "2026-11-02",
                 "--policies", str(EXAMPLES), "--out", str(path)]) == 0
    assert read_ledgers([path]).records  # every line parses (the reader fails on any bad one)


def test_costs_are_exact_prices_of_the_served_model(records: list[LedgerRecord], bundle: SignedBundle) -> None:
    prices = PriceBook(bundle.bundle.pricing)
    priced = [r for r in records if r.tokens is not None]
    assert priced
    for record in priced:
        assert record.tokens is not None and record.served_model is not None
        assert record.cost == record.tokens.cost(prices.rates(record.served_model, record.time.date()))
        assert record.priced_model == record.served_model


def test_traffic_looks_like_claude_code(records: list[LedgerRecord], bundle: SignedBundle) -> None:
    spend: dict[str, Decimal] = defaultdict(Decimal)
    for record in records:
        spend[record.developer or ""] += record.cost
    assert Decimal("0.40") <= top_decile_share(spend) <= Decimal("0.62")  # DESIGN.md: 51%
    assert {r.requested_model for r in records} == {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"}
    assert sum(1 for r in records if r.tokens and r.tokens.cache_read) > len(records) / 2
    assert max(r.tokens.total_input for r in records if r.tokens) > 150_000  # long sessions, near the compaction
    turns = Counter(r.session for r in records)
    assert statistics.median(turns.values()) >= 10
    assert len({r.repo for r in records}) >= 3
    people = developers(bundle, SETTINGS, random.Random(SETTINGS.seed))
    assert len({person.time_zone for person in people}) >= 4
    assert {"alice", "bob", "carol"} <= {r.developer for r in records}  # the policies' members
    assert {r.cost_center for r in records} <= {c.name for c in bundle.bundle.costCenters}
    assert all(r.bundle_version == bundle.version for r in records)


def test_the_policies_decide(records: list[LedgerRecord]) -> None:
    """alice's $40 daily wallet (examples/policies) steps her down, then pauses her; paused sessions end."""
    actions = Counter((r.developer, r.decision.action) for r in records)
    assert actions[("alice", "reroute")] > 0 and actions[("alice", "reject")] > 0
    for record in records:
        if record.decision.action == "reject":
            assert (record.status, record.outcome, record.tokens, record.cost) == (429, "rejected", None, 0)
            later = [r for r in records if r.session == record.session and r.time > record.time]
            assert later == []


def test_zipf_exponent_hits_the_share() -> None:
    for people in (10, 40, 500):
        exponent = zipf_exponent(people, 0.5)
        weights = [1 / (rank + 1) ** exponent for rank in range(people)]
        assert sum(weights[:max(1, people // 10)]) / sum(weights) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--days", "0"], "0 must be at least 1"),
    (["--start", "November"], "'November' is not a date like 2026-11-01"),
])
def test_bad_arguments_are_named(arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ledger", "synth", *arguments])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_directory_without_policies_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "synth", "--policies", str(tmp_path), "--days", "1"]) == 2
    assert "no CostCenter to attribute traffic to" in capsys.readouterr().err
