"""One round split by chunk range across several aggregator processes (docs/scaling.md).

Shard s of S owns a contiguous range of every update, cut at chunk boundaries. A client sends
shard s its range with its weight appended — the weight travels with every shard, so each
shard's sum carries the total weight and each shard publishes the average of its own range —
as an ordinary round of that shard named `shard_round_id(round, s, S)`. Every shard's part is a
complete, separately signed submission: its receipt names the shard's round and signs the
digest of that shard's chunks, so a shard (or the key-holder, for CKKS) checks exactly the
bytes it sums, and one shard's round can never be decrypted under another's receipts.

The shards must reveal sums of the same clients. The `Coordinator` (run beside shard 0) fixes
that set with a two-phase commit per client: a shard that validated its part of a client's
update asks `ready` and holds the part, without adding it, until every shard has validated
its own part (commit: each shard adds it and acknowledges) or the round closed first (abort:
the part is dropped). A client that dies between shards is then counted nowhere. The round
closes when the committed clients reach `expected_clients`, or at its deadline with at least
`min_clients`; every shard reveals only once its sum holds exactly the committed set.

The coordinator's decisions live in its memory: a coordinator restart fails the rounds it was
coordinating (crash-safe coordination, with the log-and-replay of `engine.py`, is future work).
A `ready` that waits longer than `READY_SECONDS` gives up, so shards whose memory budgets are
full of parts waiting on each other cannot deadlock: the parts are dropped, their clients
retry."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import InvalidInput, QuorumTimeout
from .chunks import chunk_count
from .scheme import RoundConfig

READY_SECONDS = 60.0
_DEADLINE_CHECK_SECONDS = 0.1
_SHARD_SUFFIX = re.compile(r"^(?P<round>.+)\.shard-(?P<shard>\d+)-of-(?P<shards>\d+)$")


def shard_round_id(round_id: str, shard: int, shards: int) -> str:
    return f"{round_id}.shard-{shard}-of-{shards}"


def split_round_id(shard_round: str, shard: int, shards: int) -> str:
    """The round a shard's round belongs to; InvalidInput if it names another shard layout."""
    match = _SHARD_SUFFIX.match(shard_round)
    if match is None or (int(match["shard"]), int(match["shards"])) != (shard, shards):
        raise InvalidInput(f"round {shard_round!r:.80} is not a round of shard {shard} of {shards}")
    return match["round"]


def shard_ranges(length: int, shards: int, chunk_values: int) -> list[tuple[int, int]]:
    """The value range [start, stop) of each shard in a vector of `length` values: the chunks
    divided as evenly as possible, every boundary on a chunk boundary."""
    chunks = chunk_count(length, chunk_values)
    if not 1 <= shards <= chunks:
        raise InvalidInput(f"{length} values in chunks of {chunk_values} cannot be split across {shards} shards")
    bounds = [chunks * s // shards * chunk_values for s in range(shards)] + [length]
    return [(bounds[s], min(bounds[s + 1], length)) for s in range(shards)]


class CoordinatorLink(Protocol):
    """What a shard's engine asks the coordinator (in process for shard 0, over the network
    for the others)."""

    def ready(self, round_id: str, client_id: str, shard: int) -> bool:
        """This shard validated its part of the client's update: block until every shard has
        (True: add it) or the round closed without it (False)."""

    def await_close(self, round_id: str, timeout: float) -> list[str] | None:
        """The round's contributors once fixed (None: not yet); raises the round's failure."""


@dataclass(frozen=True)
class ShardRole:
    """An aggregator's place in a sharded deployment: shard `index` of `count`."""

    index: int
    count: int
    coordinator: CoordinatorLink

    def round_of(self, shard_round: str) -> str:
        return split_round_id(shard_round, self.index, self.count)


@dataclass
class _Coordinated:
    config: RoundConfig
    opened_at: float
    ready: dict[str, set[int]] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)
    closed: list[str] | None = None
    failure: Exception | None = None


class Coordinator:
    """Thread-safe, transport-free. Rounds open on first use, with the defaults."""

    def __init__(self, shards: int, defaults: RoundConfig, clock: Callable[[], float] = time.time) -> None:
        self.shards = shards
        self.defaults = defaults.validate()
        self.clock = clock
        self._rounds: dict[str, _Coordinated] = {}
        self._changed = threading.Condition()

    def _round(self, round_id: str) -> _Coordinated:
        """The caller holds the lock."""
        found = self._rounds.get(round_id)
        if found is None:
            found = self._rounds[round_id] = _Coordinated(self.defaults, self.clock())
        return found

    def ready(self, round_id: str, client_id: str, shard: int) -> bool:
        if not 0 <= shard < self.shards:
            raise InvalidInput(f"no shard {shard} of {self.shards}")
        deadline = time.monotonic() + READY_SECONDS
        with self._changed:
            round_ = self._round(round_id)
            if client_id in round_.committed:
                return True  # a part resent after a shard restarted
            if round_.closed is not None or round_.failure is not None:
                return False
            parts = round_.ready.setdefault(client_id, set())
            parts.add(shard)
            if len(parts) == self.shards:
                del round_.ready[client_id]
                round_.committed.append(client_id)
                if len(round_.committed) == round_.config.expected_clients:
                    round_.closed = sorted(round_.committed)
                self._changed.notify_all()
                return True
            while client_id not in round_.committed:
                remaining = deadline - time.monotonic()
                if round_.closed is not None or round_.failure is not None or remaining <= 0:
                    parts.discard(shard)
                    return False
                self._changed.wait(remaining)
            return True

    def await_close(self, round_id: str, timeout: float) -> list[str] | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            round_ = self._round(round_id)
            while round_.closed is None and round_.failure is None:
                self._expire(round_id, round_)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(min(remaining, _DEADLINE_CHECK_SECONDS))
            if round_.failure is not None:
                raise round_.failure
            return round_.closed

    def _expire(self, round_id: str, round_: _Coordinated) -> None:
        """Close a round whose deadline passed: with its committed clients if enough. The shards
        long-poll `await_close`, so deadlines apply without a thread of the coordinator's own."""
        timeout = round_.config.timeout_seconds
        if round_.closed is not None or not timeout or self.clock() < round_.opened_at + timeout:
            return
        if len(round_.committed) >= round_.config.min_clients:
            round_.closed = sorted(round_.committed)
        else:
            round_.failure = QuorumTimeout(
                f"round {round_id} reached its deadline with {len(round_.committed)} of "
                f"{round_.config.min_clients} clients committed at every shard; nothing was revealed")
        self._changed.notify_all()
