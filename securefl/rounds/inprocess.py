"""Run a whole round in one process: every client half against the engine, no network.

The same core a transport drives (`RoundEngine`, the schemes' two halves, signed receipts),
with a clock the driver advances itself, so protocol properties (exact sums whatever drops,
refusals) can be checked quickly and deterministically, and scheme costs measured without
gRPC. Dropouts are scripted: a client named in `drop` vanishes just before that stage; a
`Restart` replaces the engine by a new one on the same store mid-round, as an aggregator crash
and restart would (the clients keep their protected updates and resend them when asked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..identity import Identity, Roster
from .engine import Result, RoundEngine
from .scheme import DONE, SUBMIT, ClientScheme, Protected, RoundConfig, ServerScheme, Stage, signed_receipt
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


@dataclass(frozen=True)
class Restart:
    """Restart the engine once `after` clients played `stage`, before the next one does."""

    stage: str
    after: int = 0


@dataclass
class InProcessFederation:
    """An engine and the client halves of `identities`, driven in this thread."""

    server: ServerScheme
    clients: Mapping[str, ClientScheme]
    identities: Mapping[str, Identity]
    engine: RoundEngine
    clock: ManualClock
    step_seconds: float
    store_path: str = ":memory:"
    checkpoint_seconds: float = 60.0

    @classmethod
    def start(cls, server: ServerScheme, clients: Mapping[str, ClientScheme], identities: Sequence[Identity],
              config: RoundConfig, clock: ManualClock, step_seconds: float, store_path: str = ":memory:",
              checkpoint_seconds: float = 60.0) -> InProcessFederation:
        """`step_seconds`: how far the clock jumps when no client can move (past any stage
        deadline, so the silent count as dropped). `store_path`: a file, for runs with a `Restart`."""
        engine = _engine(server, store_path, Roster.of(list(identities)), config, clock, checkpoint_seconds)
        return cls(server, clients, {i.client_id: i for i in identities}, engine, clock, step_seconds, store_path,
                   checkpoint_seconds)

    def restart(self) -> None:
        """A new engine on the same store, as after a crash: what only the old engine's memory
        held is gone."""
        old = self.engine
        old.stop()
        self.engine = _engine(self.server, self.store_path, old.roster, old.defaults, self.clock, self.checkpoint_seconds)
        old.store.close()

    def run(self, round_id: str, updates: Mapping[str, np.ndarray], weights: Mapping[str, float],
            drop: Mapping[str, str] | None = None, restart: Restart | None = None, max_steps: int = 10_000) -> Result:
        """One round with every client in `updates`; returns the engine's result (or raises the
        round's error). A client in `drop` stops answering from the stage named there."""
        drop = drop or {}
        self.engine.open_round(round_id, None)
        for cid in updates:
            self.engine.join(cid, round_id)
        jobs = {cid: self.clients[cid].start(round_id, updates[cid], weights[cid]) for cid in updates}
        active = set(jobs)
        played: dict[str, int] = {}
        sent: dict[str, Protected] = {}  # each client's protected update, kept for resends
        for _ in range(max_steps):
            # A close being recorded (on the engine's thread) is not a client that cannot move:
            # its next stage must be up before the clock may jump past its deadline.
            self.engine.settle(self.engine.get(round_id), 30.0)
            moved = False
            for cid in sorted(active):
                stage = self.engine.await_stage(round_id, cid, 0)
                if stage is None:
                    continue
                if stage.name == DONE or drop.get(cid) == stage.name:
                    active.discard(cid)
                    continue
                if restart is not None and stage.name == restart.stage and played.get(stage.name, 0) == restart.after:
                    self.restart()
                    restart, moved = None, True
                    break
                self._play(round_id, cid, jobs[cid], stage, sent)
                played[stage.name] = played.get(stage.name, 0) + 1
                moved = True
            round_ = self.engine.get(round_id)
            if round_.ended:
                return self.engine.result(round_)
            if not moved:
                self.clock.advance(self.step_seconds)
                self.engine.tick()
                self.engine.wait(round_, 0.01)  # the engine reveals on a thread of its own
        raise RuntimeError(f"round {round_id} did not end within {max_steps} steps")

    def _play(self, round_id: str, client_id: str, job, stage: Stage, sent: dict[str, Protected]) -> None:
        if stage.name == SUBMIT:
            if client_id not in sent:  # protected once, resent as is (as client.py does)
                sent[client_id] = job.protect(stage)
            protected = sent[client_id]
            receipt = signed_receipt(self.identities[client_id], round_id, self.server.name, SPEC_HASH, protected)
            self.engine.submit(receipt, len(protected.chunks), enumerate(protected.chunks))
        else:
            self.engine.answer_stage(round_id, client_id, stage.name, job.answer(stage))

    def stop(self) -> None:
        self.engine.stop()


def _engine(server: ServerScheme, store_path: str, roster: Roster, config: RoundConfig, clock: ManualClock,
            checkpoint_seconds: float) -> RoundEngine:
    return RoundEngine(server, RoundStore(store_path), roster, config, implicit_rounds=False, clock=clock, watch=False,
                       checkpoint_seconds=checkpoint_seconds)
