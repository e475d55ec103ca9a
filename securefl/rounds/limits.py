"""The round engine's limits against a misbehaving enrolled site: how many rounds may be open,
how many of them one site may have opened (by joining or submitting to a round that did not
exist), and how long a finished round stays in memory.

Security: a site cannot exhaust the aggregator's memory or its table of rounds by naming new
rounds (each open round holds an O(model) running sum), and the operator's own rounds stay
possible while one site is at its cap. A finished round leaves memory after the retention
period; its result stays in the store, so late contributors still fetch it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput


@dataclass(frozen=True)
class RoundLimits:
    max_open_rounds: int = 64
    max_open_rounds_per_site: int = 4
    retention_seconds: float = 600.0

    def validate(self) -> RoundLimits:
        if self.max_open_rounds < 1 or self.max_open_rounds_per_site < 1:
            raise InvalidInput("the caps on open rounds must be at least 1")
        if self.max_open_rounds_per_site > self.max_open_rounds:
            raise InvalidInput("max_open_rounds_per_site cannot exceed max_open_rounds")
        if not self.retention_seconds >= 0:
            raise InvalidInput("retention_seconds must not be negative")
        return self
