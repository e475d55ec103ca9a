"""Run a whole round in one process: every client half against the engine, no network.

The same core a transport drives (`RoundEngine`, the schemes' two halves, signed receipts),
with a clock the driver advances itself, so protocol properties (exact sums whatever drops,
refusals) can be checked quickly and deterministically, and scheme costs measured without
gRPC. Dropouts are scripted: a client named in `drop` vanishes just before that stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..identity import Identity, Roster
from .engine import Result, RoundEngine
from .scheme import DONE, SUBMIT, ClientScheme, RoundConfig, ServerScheme, Stage, signed_receipt
from .store import RoundStore

SPEC_HASH = bytes(32)  # the in-process driver submits flat vectors: any fixed spec


class ManualClock:
    """Time that moves only when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class InProcessFederation:
    """An engine and the client halves of `identities`, driven in this thread."""

    server: ServerScheme
    clients: Mapping[str, ClientScheme]
    identities: Mapping[str, Identity]
    engine: RoundEngine
    clock: ManualClock
    step_seconds: float

    @classmethod
    def start(cls, server: ServerScheme, clients: Mapping[str, ClientScheme], identities: Sequence[Identity],
              config: RoundConfig, clock: ManualClock, step_seconds: float) -> InProcessFederation:
        """`step_seconds`: how far the clock jumps when no client can move (past any stage
        deadline, so the silent count as dropped)."""
        roster = Roster.of(list(identities))
        engine = RoundEngine(server, RoundStore(), roster, config, implicit_rounds=False, clock=clock, watch=False)
        return cls(server, clients, {i.client_id: i for i in identities}, engine, clock, step_seconds)

    def run(self, round_id: str, updates: Mapping[str, np.ndarray], weights: Mapping[str, float],
            drop: Mapping[str, str] | None = None, max_steps: int = 10_000) -> Result:
        """One round with every client in `updates`; returns the engine's result (or raises the
        round's error). A client in `drop` stops answering from the stage named there."""
        drop = drop or {}
        self.engine.open_round(round_id, None)
        for cid in updates:
            self.engine.join(cid, round_id)
        jobs = {cid: self.clients[cid].start(round_id, updates[cid], weights[cid]) for cid in updates}
        active = set(jobs)
        for _ in range(max_steps):
            moved = False
            for cid in sorted(active):
                stage = self.engine.await_stage(round_id, cid, 0)
                if stage is None:
                    continue
                if stage.name == DONE or drop.get(cid) == stage.name:
                    active.discard(cid)
                    continue
                self._play(round_id, cid, jobs[cid], stage)
                moved = True
            round_ = self.engine.get(round_id)
            if round_.ended:
                return self.engine.result(round_)
            if not moved:
                self.clock.advance(self.step_seconds)
                self.engine.tick()
                self.engine.wait(round_, 0.01)  # the engine reveals on a thread of its own
        raise RuntimeError(f"round {round_id} did not end within {max_steps} steps")

    def _play(self, round_id: str, client_id: str, job, stage: Stage) -> None:
        if stage.name == SUBMIT:
            protected = job.protect(stage)
            receipt = signed_receipt(self.identities[client_id], round_id, self.server.name, SPEC_HASH, protected)
            self.engine.submit(receipt, len(protected.chunks), enumerate(protected.chunks))
        else:
            self.engine.answer_stage(round_id, client_id, stage.name, job.answer(stage))

    def stop(self) -> None:
        self.engine.stop()
