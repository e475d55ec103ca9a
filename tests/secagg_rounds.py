"""SecAgg+ rounds driven stage by stage in process, for protocol and attack tests: the real client
halves and the real server half, with the test standing where the network would be, so it can
stop a round anywhere, drop clients, or replace what a client is told."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from securefl.federation import Federation, SecurityParameters
from securefl.identity import Identity
from securefl.masking.client import SecAggClient, SecAggClientRound
from securefl.masking.policy import secagg_config
from securefl.masking.server import MASKED, SecAggRound, SecAggServer
from securefl.rounds.chunks import chunk_length
from securefl.rounds.inprocess import ManualClock
from securefl.rounds.scheme import SUBMIT, RoundConfig, Stage
from securefl.v1 import aggregator_pb2

TEST_SECURITY = SecurityParameters(dropout_fraction=0.1, corrupt_fraction=0.1, value_bound=10.0, max_weight=10.0,
                                   min_participants=2)


class Enrolment:
    """n enrolled clients, the security parameters they pin, and an honest aggregator's server half."""

    def __init__(self, n: int, security: SecurityParameters = TEST_SECURITY, stage_timeout: float = 30.0) -> None:
        self.identities = [Identity.generate(f"c{i:03d}") for i in range(n)]
        self.federation = Federation.in_process(self.identities, security)
        self.roster = self.federation.roster
        self.security = security
        self.config = secagg_config(security, n)
        self.clock = ManualClock()
        self.server = SecAggServer(self.config, self.roster, stage_timeout=stage_timeout, clock=self.clock)
        self.session = aggregator_pb2.Session(scheme=self.server.name)
        self.server.describe(self.session)
        self.ids = sorted(i.client_id for i in self.identities)

    def client(self, identity: Identity) -> SecAggClient:
        return SecAggClient(self.session, identity, self.federation)


class HandRound:
    """One round whose clients the test moves one stage at a time."""

    def __init__(self, enrolment: Enrolment, round_id: str = "r1",
                 vectors: Mapping[str, np.ndarray] | None = None) -> None:
        self.enrolment = enrolment
        self.server = enrolment.server
        self.round: SecAggRound = self.server.new_round(round_id, RoundConfig(2, len(enrolment.ids)), enrolment.clock())
        self.vectors = vectors or {cid: np.zeros(3) for cid in enrolment.ids}
        self.jobs: dict[str, SecAggClientRound] = {
            i.client_id: enrolment.client(i).start(round_id, self.vectors[i.client_id], 1.0)
            for i in enrolment.identities if i.client_id in self.vectors
        }
        self.accumulator = self.server.new_accumulator()
        self.submitted: list[str] = []

    def stage(self, client_id: str) -> Stage | None:
        return self.round.stage_for(client_id, client_id in self.submitted)

    def play(self, client_id: str, stage: Stage | None = None) -> Stage | None:
        """The client answers `stage` (by default, what the aggregator asks of it now)."""
        stage = stage or self.stage(client_id)
        if stage is None:
            return None
        job = self.jobs[client_id]
        if stage.name == SUBMIT:
            protected = job.protect(stage)
            self.round.admit(client_id)
            length = protected.vector_length
            self.accumulator.add([self.server.parse_chunk(i, c, chunk_length(i, length, self.server.chunk_values))
                                  for i, c in enumerate(protected.chunks)])
            self.submitted.append(client_id)
        else:
            self.round.answer(client_id, stage.name, job.answer(stage))
        return stage

    def until(self, stage_name: str, clients: Iterable[str] | None = None) -> HandRound:
        """Move `clients` (default: all) until the round reaches `stage_name`, as the engine
        would: the input stage closes when they all sent their masked inputs, and any other stage
        at its deadline when they have nothing left to do (the others count as dropped)."""
        clients = list(self.jobs if clients is None else clients)
        clock = self.enrolment.clock
        while self.round.stage != stage_name:
            stage = self.round.stage
            moved = [cid for cid in clients if self.play(cid) is not None]
            if self.round.stage == MASKED and set(clients) <= set(self.submitted):
                self.round.begin_reveal(self.submitted)
            elif not moved and self.round.stage == stage:
                clock.advance(self.server.stage_timeout + 1)
                self.round.tick(clock())
                if self.round.stage == stage:
                    raise AssertionError(f"stuck in stage {stage} before {stage_name}")
        return self

    def reveal(self) -> np.ndarray:
        length = self.accumulator.total.size
        return self.round.reveal(self.accumulator, length, b"", [])
