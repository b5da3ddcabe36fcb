"""A synthetic ledger: realistic, reproducible Claude Code traffic for demos, tests and benchmarks.

Pure: a seeded `random.Random` and a start date in, ledger records out (no clock, no files). The
same (policies, settings) always give the same lines.

What it models, after the facts in DESIGN.md section 1:
- developers from the policies' cost centers (their members first, then made-up names), each in
  one of several time zones, working weekdays in local office hours (a little at weekends);
- spend concentrated in a few people: a developer's share of the turns follows a Zipf law with
  noise, and heavy users favour Opus, so the top 10% produce about half the spend;
- long sessions: the context (system prompt and tools, then every turn's additions) is written to
  the prompt cache once and read back on every later turn, grows to 160-180K tokens, and is
  compacted; a pause of more than five minutes lets the cache expire (a full write again);
- an Opus / Sonnet / Haiku mix per session (claude-opus-5-5, claude-sonnet-5-5,
  claude-haiku-5-5), plus Claude Code's small Haiku side calls (titles, summaries);
- a few repositories and branches, session ids, overloaded errors that are retried, and a user
  now and then pressing Esc mid-stream (an `estimated` line);
- the policy's own decisions: every request is admitted by a PolicyRun over the compiled policies
  (spendgate.logic.replay), so a downgraded request is served and priced by the cheaper model, and
  a paused developer gets the 429 line and stops that session (and tries again at the next one).
Costs come from spendgate.logic.pricing (genai-prices), exact to the last digit.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Final

from spendgate.api.v1alpha1 import ScopeKind
from spendgate.logic.enforcement import Action, Caller, Decision, describe_decision, estimate_input_tokens
from spendgate.logic.ledgerrecord import LEDGER_SCHEMA, LedgerDecision, LedgerRecord
from spendgate.logic.pricing import PriceBook, Tokens
from spendgate.logic.replay import ZERO, PolicyRun, settle_time
from spendgate.logic.windows import zone
from spendgate.policy.bundle import SignedBundle

OPUS: Final = "claude-opus-5-5"
SONNET: Final = "claude-sonnet-5-5"
HAIKU: Final = "claude-haiku-5-5"
NAMES: Final = (
    "alice", "bob", "carol", "dana", "erin", "farid", "grace", "hiro", "ines", "jonas", "kemal", "lena", "mateo",
    "nadia", "oscar", "priya", "quinn", "rosa", "sanjay", "tomas", "uma", "victor", "wen", "xavier", "yara",
    "zoe", "amara", "bruno", "chen", "diego", "elif", "felix", "gita", "hannah", "ivan", "julia", "kofi", "lucia",
    "marek", "noor", "olga", "pablo", "rahul", "sofia", "theo", "ulla", "vera", "yusuf",
)
TIME_ZONES: Final = (("America/Los_Angeles", 4), ("America/New_York", 5), ("Europe/London", 2),
                     ("Europe/Berlin", 4), ("Asia/Kolkata", 3), ("Asia/Tokyo", 1), ("Australia/Sydney", 1))
REPOSITORIES: Final = ("acme/payments-api", "acme/web-app", "acme/platform-infra", "acme/mobile", "acme/data-pipeline")
BRANCHES: Final = ("main", "feature/checkout-v2", "fix/flaky-tests", "chore/deps", "feature/search")
TURNS_PER_WORKDAY: Final = 80  # an average developer's conversation turns per working day
# Their wallets pause the heaviest users now and then, so a 56% share of the turns makes about half the
# spend (DESIGN.md: 51%).
TOP_DECILE_TURN_SHARE: Final = 0.56
SIDE_CALL_SHARE: Final = 0.3  # of requests after a session's first: small Haiku side calls
SYSTEM_TOKENS: Final = 18_000  # Claude Code's system prompt and tool definitions
COMPACT_ABOVE: Final = 165_000
CACHE_TTL: Final = timedelta(minutes=5)
TOKENS_PER_SECOND: Final = {OPUS: 55, SONNET: 80, HAIKU: 160}
BYTES_PER_TOKEN: Final = 4  # what admission's estimate assumes; bodies are given +-10% around it


@dataclass(frozen=True)
class SynthSettings:
    start: date
    days: int = 30
    developers: int = 40
    seed: int = 1
    requests: int | None = None  # roughly this many requests instead of TURNS_PER_WORKDAY per developer


@dataclass(frozen=True)
class Developer:
    name: str
    cost_center: str
    time_zone: str
    weight: float  # share of all turns
    opus_share: float
    repositories: tuple[str, ...]


@dataclass
class Session:
    developer: Developer
    id: str
    repository: str
    branch: str
    model: str
    turns_left: int
    rng: random.Random
    context: int = 0  # tokens in the conversation so far (cached prefix)
    cached_until: datetime | None = None

    def key(self) -> str:
        return f"{self.developer.name}-laptop"


# A session's next request: (when, sequence, session, is a retry); a heap of plain tuples.
_Next = tuple[datetime, int, Session, bool]


def developers(signed: SignedBundle, settings: SynthSettings, rng: random.Random) -> list[Developer]:
    """The policies' members first (in their cost centers), then made-up developers spread over the
    cost centers; each with a time zone, a share of the traffic and favourite repositories."""
    bundle = signed.bundle
    centers = sorted(c.name for c in bundle.costCenters)
    if not centers:
        raise ValueError("the policies define no CostCenter to attribute synthetic traffic to")
    people = [(member, c.name) for c in sorted(bundle.costCenters, key=lambda c: c.name) for member in c.members]
    people += [(b.scope.name, b.costCenter) for b in bundle.budgets
               if b.scope.kind is ScopeKind.DEVELOPER and b.scope.name is not None]
    named = list(dict.fromkeys(people))  # first cost center wins for someone listed twice
    taken = {name for name, _ in named}
    spare = [name for name in NAMES if name not in taken]
    number = 0
    while len(named) < settings.developers:
        base = spare[number % len(spare)] if spare else "dev"
        name = base if number < len(spare) else f"{base}{number // max(1, len(spare)) + 1}"
        named.append((name, centers[number % len(centers)]))
        number += 1
    named = named[:settings.developers]
    # People with a wallet of their own get one because they spend: they take the top ranks.
    walleted = {b.scope.name for b in bundle.budgets if b.scope.kind is ScopeKind.DEVELOPER}
    top = iter(range(len(named)))
    ranks = [next(top) if name in walleted else -1 for name, _ in named]
    others = list(range(max(ranks) + 1, len(named)))
    rng.shuffle(others)
    ranks = [rank if rank >= 0 else others.pop() for rank in ranks]
    exponent = zipf_exponent(len(named), TOP_DECILE_TURN_SHARE)
    raw = [rng.lognormvariate(0, 0.3) / (rank + 1) ** exponent for rank in ranks]
    total = sum(raw)
    repositories = _repositories(signed)
    zones, zone_weights = zip(*TIME_ZONES, strict=True)
    people_out = []
    for (name, center), rank, share in zip(named, ranks, raw, strict=True):
        heavy = 1 - rank / max(1, len(named) - 1)  # 1 for the heaviest user, 0 for the lightest
        people_out.append(Developer(
            name=name, cost_center=center, time_zone=rng.choices(zones, zone_weights)[0], weight=share / total,
            opus_share=0.35 + 0.5 * heavy, repositories=tuple(rng.sample(repositories, k=min(2, len(repositories))))))
    return people_out


def zipf_exponent(people: int, top_decile_share: float) -> float:
    """The exponent a for which the top 10% of `people` ranks hold `top_decile_share` of sum(1 / rank^a)."""
    top = max(1, people // 10)

    def share(exponent: float) -> float:
        weights = [math.pow(rank + 1, -exponent) for rank in range(people)]
        return sum(weights[:top]) / sum(weights)

    low, high = 0.0, 4.0
    for _ in range(40):  # bisection: share() grows with the exponent
        middle = (low + high) / 2
        low, high = (middle, high) if share(middle) < top_decile_share else (low, middle)
    return (low + high) / 2


def _repositories(signed: SignedBundle) -> list[str]:
    budgeted = [b.scope.name for b in signed.bundle.budgets if b.scope.kind is ScopeKind.REPOSITORY and b.scope.name]
    return list(dict.fromkeys([*budgeted, *REPOSITORIES]))


def synthesize(signed: SignedBundle, settings: SynthSettings) -> Iterator[LedgerRecord]:
    """The ledger lines, in order of arrival."""
    if settings.days < 1 or settings.developers < 1:
        raise ValueError("days and developers must be at least 1")
    rng = random.Random(settings.seed)
    people = developers(signed, settings, rng)
    workdays = sum(1 for offset in range(settings.days) if (settings.start + timedelta(offset)).weekday() < 5)
    total_turns = (settings.requests * (1 - SIDE_CALL_SHARE) if settings.requests
                   else TURNS_PER_WORKDAY * max(1, workdays) * len(people))
    queue: list[_Next] = []
    for person in people:
        for start, session in _sessions(person, settings, total_turns, rng):
            queue.append((start, len(queue), session, False))
    heapq.heapify(queue)
    yield from _Traffic(signed, PriceBook(signed.bundle.pricing), queue).run()


def _sessions(person: Developer, settings: SynthSettings, total_turns: float, rng: random.Random
              ) -> Iterator[tuple[datetime, Session]]:
    tz = zone(person.time_zone)
    turns_per_day = total_turns * person.weight / max(1, settings.days * 5 / 7)
    for offset in range(settings.days):
        day = settings.start + timedelta(offset)
        weekend = day.weekday() >= 5
        budget = turns_per_day * (0.08 if weekend else 1.0) * rng.uniform(0.6, 1.4)
        while budget >= 1:
            length = max(2, min(int(budget), int(rng.lognormvariate(math.log(30), 0.9))))
            budget -= length
            local = datetime.combine(day, time(9), tzinfo=tz) + timedelta(minutes=rng.uniform(0, 9.5 * 60))
            session_rng = random.Random(rng.getrandbits(64))
            model = rng.choices((OPUS, SONNET, HAIKU), (person.opus_share, 0.95 - person.opus_share, 0.05))[0]
            yield local.astimezone(UTC), Session(
                developer=person, id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                repository=rng.choice(person.repositories), branch=rng.choice(BRANCHES), model=model,
                turns_left=length, rng=session_rng)


@dataclass(frozen=True)
class _Turn:
    model: str
    tokens: Tokens
    body_bytes: int
    added: int  # tokens this turn adds to the conversation (before the answer)
    side_call: bool  # a small Haiku call beside the conversation
    stream: bool


class _Traffic:
    """Runs the sessions in time order through the policy: each turn is admitted, served, priced."""

    def __init__(self, signed: SignedBundle, prices: PriceBook, queue: list[_Next]) -> None:
        self._signed = signed
        self._prices = prices
        self._queue = queue
        self._run = PolicyRun(signed.bundle)
        self._sequence = len(queue)

    def run(self) -> Iterator[LedgerRecord]:
        while self._queue:
            yield from self._request(*heapq.heappop(self._queue))
        self._run.finish()

    def _request(self, now: datetime, sequence: int, session: Session, retry: bool) -> Iterator[LedgerRecord]:
        rng = session.rng
        turn = _next_turn(session, now)
        person = session.developer
        caller = Caller(person.name, person.cost_center, session.key(), session.repository)
        decision = self._run.admit(caller, turn.model, estimate_input_tokens(turn.body_bytes), now)
        if decision.action is Action.PAUSE:
            yield self._line(now, session, turn, decision, status=429, outcome="rejected", error="billing_error",
                             latency=rng.uniform(0.3, 0.9))
            return  # the developer reads the pause and leaves this session
        served = decision.model
        overloaded = not retry and rng.random() < 0.004
        if overloaded:
            yield self._line(now, session, turn, decision, status=529, outcome="upstream_error",
                             error="overloaded_error", latency=rng.uniform(200, 900))
            self._schedule(session, now + timedelta(seconds=rng.uniform(1, 4)), retry=True)
            return
        interrupted = rng.random() < 0.003
        tokens = turn.tokens
        if interrupted:
            tokens = Tokens(tokens.input, tokens.cache_write_5m, tokens.cache_write_1h, tokens.cache_read,
                            max(1, tokens.output // 3))
        latency = 1000 * (rng.uniform(0.6, 2.5) + tokens.output / TOKENS_PER_SECOND[_family(served)])
        rates = self._prices.rates(served, now.date())
        cost = tokens.cost(rates)
        self._run.charge(decision, cost, settle_time(now, latency))
        yield self._line(now, session, turn, decision, status=200,
                         outcome="client_disconnected" if interrupted else "ok", latency=latency, served=served,
                         tokens=tokens, priced=(rates.model, cost), flags=("estimated",) if interrupted else ())
        if not turn.side_call:
            session.turns_left -= 1
            session.context += turn.added + tokens.output
            session.cached_until = settle_time(now, latency) + CACHE_TTL
        if session.turns_left > 0:
            pause = rng.uniform(2, 30) if rng.random() < 0.8 else rng.uniform(60, 900)
            self._schedule(session, settle_time(now, latency) + timedelta(seconds=pause))

    def _schedule(self, session: Session, at: datetime, retry: bool = False) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (at, self._sequence, session, retry))

    def _line(self, now: datetime, session: Session, turn: _Turn, decision: Decision, status: int, outcome: str,
              latency: float, error: str | None = None, served: str | None = None, tokens: Tokens | None = None,
              priced: tuple[str, Decimal] | None = None, flags: tuple[str, ...] = ()) -> LedgerRecord:
        rng = session.rng
        rerouted = decision.action is Action.REROUTE
        priced_model, cost = priced if priced else (None, ZERO)
        return LedgerRecord(
            schema_version=LEDGER_SCHEMA, time=now, request_id=f"req_synth_{rng.getrandbits(80):020x}",
            method="POST", path="/v1/messages", endpoint="messages", key_name=session.key(),
            developer=session.developer.name, cost_center=session.developer.cost_center,
            repo=session.repository, branch=session.branch, session=session.id, session_source="header",
            request_class=None, agent_id=None, requested_model=turn.model,
            served_model=served or (decision.model if rerouted else None),
            priced_model=priced_model, price_source="genai-prices" if priced else None, stream=turn.stream,
            tokens=tokens, cost=cost, status=status, outcome=outcome, error_type=error,
            latency_ms=round(latency, 3), upstream_ms=round(min(latency, rng.uniform(250, 900)), 3)
            if status != 429 else None, added_ms=round(rng.uniform(0.2, 0.7), 3),
            decision=LedgerDecision("reject" if decision.action is Action.PAUSE else decision.action.value,
                                    describe_decision(decision), decision.model if rerouted else None),
            flags=flags, bundle_version=self._signed.version, request_bytes=turn.body_bytes)


def _family(model: str) -> str:
    return next((m for m in (OPUS, SONNET, HAIKU) if m.split("-")[1] in model), SONNET)


def _next_turn(session: Session, now: datetime) -> _Turn:
    """The tokens of the session's next request: a conversation turn, or now and then a side call."""
    rng = session.rng
    if session.context and rng.random() < SIDE_CALL_SHARE:
        side_input = int(rng.uniform(300, 2500))
        return _Turn(HAIKU, Tokens(input=side_input, output=int(rng.uniform(15, 200))),
                     _body(side_input, rng), added=0, side_call=True, stream=rng.random() < 0.5)
    if session.context == 0 or session.context > COMPACT_ABOVE:
        session.context = SYSTEM_TOKENS if session.context == 0 else int(rng.uniform(20_000, 40_000))
        session.cached_until = None
    added = int(rng.lognormvariate(math.log(2500), 1.0))
    cached = session.cached_until is not None and now <= session.cached_until
    tokens = Tokens(
        input=int(rng.uniform(1, 120)),
        cache_write_5m=added if cached else session.context + added,
        cache_read=session.context if cached else 0,
        output=min(16_000, int(rng.lognormvariate(math.log(650), 0.9))),
    )
    return _Turn(session.model, tokens, _body(tokens.total_input, rng), added=added, side_call=False, stream=True)


def _body(input_tokens: int, rng: random.Random) -> int:
    return int(input_tokens * BYTES_PER_TOKEN * rng.uniform(0.9, 1.1))


def top_decile_share(spend_by_developer: dict[str, Decimal]) -> Decimal:
    """The share of all spend that the top 10% of developers (at least one) produced."""
    ordered = sorted(spend_by_developer.values(), reverse=True)
    total = sum(ordered, ZERO)
    return sum(ordered[:max(1, len(ordered) // 10)], ZERO) / total if total else ZERO
