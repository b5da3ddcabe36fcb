"""Rate limits in the proxy: the cost centers' `rateLimits`, counted per replica in memory.

Beside the spend tracker, not inside it: a minute of counts is not money, it is not journaled or
reported, and a restarted proxy starts with empty windows. The decision is the pure sliding window
of spendgate.logic.ratelimit; this module finds the limits that bind a caller (built once per
bundle, cached per key), turns a refusal into the 429 Anthropic itself sends, and feeds the real
token counts back at settlement.

Across replicas each proxy counts only what it admitted: N replicas behind a load balancer admit up
to N times a limit when a caller's requests spread over all of them (Claude Code keeps one
connection, so it mostly stays on one). `replicas` (`spendgate proxy --rate-limit-replicas N`)
makes each replica enforce its share, the limit divided by N and rounded up: the fleet then admits
at most about the limit, and a caller pinned to one replica gets only its share (docs/proxy.md,
"Rate limits", and bench/ratelimit_fleet.py measure both).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from spendgate.logic.ratelimit import (
    Admitted,
    Dimension,
    Limit,
    PerMinute,
    RateLimiter,
    Reading,
    Refused,
    most_restrictive,
)
from spendgate.logic.windows import rfc3339
from spendgate.policy.bundle import Bundle, RateLimitEntry, SignedBundle
from spendgate.proxy.admission import Headers, Reject
from spendgate.proxy.attribution import Identity

REQUESTS, INPUT_TOKENS, OUTPUT_TOKENS = Dimension.REQUESTS, Dimension.INPUT_TOKENS, Dimension.OUTPUT_TOKENS
UNITS: Final = {REQUESTS: "requests", INPUT_TOKENS: "input tokens", OUTPUT_TOKENS: "output tokens"}


class LimitIndex:
    """A bundle's rate limits by caller: the caller's cost center and its ancestors, each with its
    per-key, per-developer and total limits. Built once per bundle; cached per key (bounded by the
    bundle's keys)."""

    def __init__(self, bundle: Bundle, replicas: int) -> None:
        self._centers = {entry.name: entry for entry in bundle.costCenters}
        self._replicas = replicas
        self.any = any(entry.rateLimits for entry in bundle.costCenters)
        self._by_caller: dict[Identity, tuple[Limit, ...]] = {}

    def limits_for(self, identity: Identity) -> tuple[Limit, ...]:
        if not self.any:
            return ()
        found = self._by_caller.get(identity)
        if found is None:
            found = self._by_caller[identity] = tuple(self._find(identity))
        return found

    def _find(self, identity: Identity) -> list[Limit]:
        center = self._centers.get(identity.cost_center)
        chain = [identity.cost_center, *center.ancestors] if center else []
        found = []
        for name in chain:
            limits = self._centers[name].rateLimits if name in self._centers else None
            if limits is None:
                continue
            for entry, subject, owner in (
                    (limits.perVirtualKey, f"key:{identity.key_name}",
                     f"key {identity.key_name} (cost center {name}, perVirtualKey)"),
                    (limits.perDeveloper, f"developer:{identity.developer}",
                     f"developer {identity.developer} (cost center {name}, perDeveloper)"),
                    (limits.total, "total", f"cost center {name} (total)")):
                if entry is not None:
                    found.append(Limit((name, subject), self._shares(entry), owner))
        return found

    def _shares(self, entry: RateLimitEntry) -> PerMinute:
        """This replica's share of each limit: the limit divided by the replicas, rounded up, at least 1."""
        share = [None if limit is None else max(1, math.ceil(limit / self._replicas))
                 for limit in (entry.requestsPerMinute, entry.inputTokensPerMinute, entry.outputTokensPerMinute)]
        return share[0], share[1], share[2]


class RateLimits:
    """This replica's windows. `clock` is monotonic seconds (tests pass their own)."""

    def __init__(self, replicas: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.replicas = replicas
        self._clock = clock
        self._limiter = RateLimiter()
        self._indexed: tuple[str, LimitIndex] | None = None

    def limits_for(self, signed: SignedBundle, identity: Identity) -> tuple[Limit, ...]:
        """The limits that bind the caller (none: nothing to count)."""
        return self._index(signed).limits_for(identity)

    def admit(self, limits: tuple[Limit, ...], input_tokens: int, output_tokens: int, now: datetime
              ) -> Admitted | Reject:
        """The request counted against `limits` (with its estimate), or the 429."""
        clock = self._clock()
        decision = self._limiter.admit(limits, (1, input_tokens, output_tokens), clock)
        if isinstance(decision, Refused):
            return self._refusal(decision, clock, now)
        return decision

    def settle(self, admitted: Admitted, input_tokens: int, output_tokens: int) -> None:
        """The tokens the request really used (0 and 0 when nothing billable came back)."""
        self._limiter.settle(admitted, (None, input_tokens, output_tokens), self._clock())

    def _index(self, signed: SignedBundle) -> LimitIndex:
        if self._indexed is None or self._indexed[0] != signed.contentHash:
            self._indexed = (signed.contentHash, LimitIndex(signed.bundle, self.replicas))
            self._limiter.prune(self._clock())  # windows of keys or limits that left count nothing soon
        return self._indexed[1]

    def _refusal(self, refused: Refused, clock: float, now: datetime) -> Reject:
        binding = refused.binding
        retry_after = refused.retry_after(clock)
        unit = UNITS[binding.dimension]
        share = f", this gateway's share of {self.replicas} replicas" if self.replicas > 1 else ""
        message = (f"rate limit reached: {binding.limit.owner} may send {binding.per_minute:,} {unit} per minute"
                   f"{share}; try again in {retry_after} s")
        reason = f"rate limit: {binding.limit.owner} {binding.per_minute} {unit}/min"
        headers: Headers = (("retry-after", str(retry_after)), ("x-should-retry", "true"),
                            *rate_limit_headers(refused.readings, clock, now))
        return Reject(429, "rate_limit_error", message, reason, headers)


def rate_limit_headers(readings: tuple[Reading, ...], clock: float, now: datetime) -> Headers:
    """Anthropic's anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}
    for the most restrictive limit of each kind; `tokens` is the tighter of the two token limits."""
    chosen = most_restrictive(readings)
    tokens = [chosen[dimension] for dimension in (INPUT_TOKENS, OUTPUT_TOKENS) if dimension in chosen]
    named = [(dimension.value, reading) for dimension, reading in chosen.items()]
    if tokens:
        named.append(("tokens", min(tokens, key=lambda reading: reading.remaining)))
    headers: list[tuple[str, str]] = []
    for name, reading in named:
        # in whole seconds, rounded up: a client that waits until the reset finds the window empty
        reset = datetime.fromtimestamp(math.ceil(now.timestamp() + max(0.0, reading.empty_at - clock)), UTC)
        headers += [(f"anthropic-ratelimit-{name}-limit", str(reading.per_minute)),
                    (f"anthropic-ratelimit-{name}-remaining", str(reading.remaining)),
                    (f"anthropic-ratelimit-{name}-reset", rfc3339(reset))]
    return tuple(headers)
