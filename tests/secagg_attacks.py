"""Attackers of SecAgg+ for the tests: a lying aggregator served over real gRPC, and cheating
clients. Each reuses the real code (engine, server half, client half) and changes only what the
attacker controls."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import securefl
from securefl.enrolment import create_federation
from securefl.federation import Federation, SecurityParameters
from securefl.identity import Identity
from securefl.masking import keys, shamir
from securefl.masking.client import SecAggClient, SecAggClientRound, SecAggParticipant
from securefl.masking.server import SecAggServer
from securefl.pki import AGGREGATOR, SITE
from securefl.masking.statements import self_seed_commitment, share_associated_data, sign_stage_message
from securefl.prg import SEED_BYTES
from securefl.rounds.engine import Round, RoundEngine
from securefl.rounds.scheme import RoundConfig, Stage
from securefl.rounds.store import RoundStore
from securefl.schemes import session_of
from securefl.services.aggregator import AggregatorService
from securefl.services.rpc import start_server, translate_errors
from securefl.v1 import aggregator_pb2, secagg_pb2

SECURITY = SecurityParameters(value_bound=10.0, max_weight=100.0, min_participants=3)
STAGE_TIMEOUT = 1.0
POLL_SECONDS = 0.1

# -- a lying aggregator over real gRPC ---------------------------------------------------------


@dataclass
class Sent:
    """Everything the clients sent the aggregator: stage answers and masked inputs."""

    answers: list[tuple[str, str, bytes]] = field(default_factory=list)  # (client, stage, body)
    submissions: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, stage: str, client_id: str | None = None) -> list[bytes]:
        with self.lock:
            return [b for c, s, b in self.answers if s == stage and client_id in (None, c)]

    def revealed_seed_owners(self) -> set[tuple[str, str]]:
        """(holder, owner) of every self-mask seed share any client revealed."""
        return {(r.client_id, s.owner) for r in map(secagg_pb2.UnmaskResponse.FromString, self.bodies("unmask"))
                for s in r.seed_shares}

    def revealed_key_owners(self) -> set[tuple[str, str]]:
        return {(r.client_id, s.owner) for r in map(secagg_pb2.UnmaskResponse.FromString, self.bodies("unmask"))
                for s in r.key_shares}


class Lie:
    """What the aggregator does differently from the honest engine; the default is nothing."""

    def session(self, session: aggregator_pb2.Session) -> aggregator_pb2.Session:
        return session

    def inject(self, client_id: str, round_: Round, sent: Sent) -> Stage | None:
        """A stage of the liar's own to send instead of asking the engine."""
        return None

    def rewrite(self, client_id: str, stage: Stage, round_: Round) -> Stage:
        """What the client is told instead of the engine's stage."""
        return stage

    def swallow(self, client_id: str, stage: str, body: bytes, round_: Round) -> bool:
        """True: keep the answer from the engine (and acknowledge it anyway)."""
        return False


class LyingAggregator(AggregatorService):
    """The real aggregator service and engine, with `lie` deciding what clients are told and
    which of their answers the engine sees; every client message is recorded in `sent`."""

    def __init__(self, engine: RoundEngine, federation: Federation, session: aggregator_pb2.Session,
                 signer: Identity, lie: Lie) -> None:
        super().__init__(engine, federation, session, signer)
        self.engine = engine
        self.lie = lie
        self.sent = Sent()

    @translate_errors
    def GetSession(self, request, context) -> aggregator_pb2.Session:
        return self.lie.session(self._session)

    @translate_errors
    def AwaitStage(self, request, context) -> aggregator_pb2.StageMessage:
        client_id = self._site(context, request.client_id, "follow stages")
        return self._lying_next_stage(request.round_id, client_id)

    @translate_errors
    def AnswerStage(self, request, context) -> aggregator_pb2.StageAck:
        """The lies reach a client through both ways it learns its next stage: AwaitStage and
        the acknowledgement of its previous answer (`await_next`)."""
        client_id = self._site(context, request.client_id, "answer stages")
        with self.sent.lock:
            self.sent.answers.append((client_id, request.stage, request.body))
        round_ = self.engine.get(request.round_id)
        if not self.lie.swallow(client_id, request.stage, request.body, round_):
            self.engine.answer_stage(request.round_id, client_id, request.stage, request.body)
        ack = aggregator_pb2.StageAck(stage=request.stage)
        if request.await_next:
            ack.next.CopyFrom(self._lying_next_stage(request.round_id, client_id))
        return ack

    def _lying_next_stage(self, round_id: str, client_id: str) -> aggregator_pb2.StageMessage:
        round_ = self.engine.get(round_id)
        reply = aggregator_pb2.StageMessage(round_id=round_id, client_id=client_id)
        stage = self.lie.inject(client_id, round_, self.sent)
        if stage is None:
            stage = self.engine.await_stage(round_id, client_id, POLL_SECONDS)
            if stage is not None:
                stage = self.lie.rewrite(client_id, stage, round_)
        if stage is not None:
            reply.stage, reply.body = stage.name, stage.body
        return reply

    def Submit(self, request_iterator, context) -> aggregator_pb2.SubmitAck:
        first = next(request_iterator, None)
        if first is not None and first.HasField("header"):
            with self.sent.lock:
                self.sent.submissions.append(first.header.receipt.client_id)

        def replay():
            if first is not None:
                yield first
            yield from request_iterator
        return super().Submit(replay(), context)


@dataclass
class LyingFederation:
    identities: list[Identity]
    service: LyingAggregator
    clients: list[securefl.Client]

    @property
    def ids(self) -> list[str]:
        return [i.client_id for i in self.identities]

    def run(self, round_id: str, vectors: list[np.ndarray]) -> list[Any]:
        return run_all(self.clients, round_id, vectors)


def run_all(clients: list[securefl.Client], round_id: str, vectors: list[np.ndarray]) -> list[Any]:
    """Every client aggregates at once; each outcome is the average or the error it raised."""
    def one(i: int):
        try:
            return clients[i].aggregate(vectors[i], weight=1.0, round_id=round_id, timeout=30)
        except Exception as exc:  # the outcome under test
            return exc
    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(one, range(len(vectors))))


@contextmanager
def lying_federation(n: int, lie: Lie, security: SecurityParameters = SECURITY):
    """n enrolled sites (real `securefl.connect` clients) and their enrolled aggregator, which
    lies, all over mutual TLS with the federation's certificates."""
    enrolment = create_federation([f"site-{i}" for i in range(n)], keyholder_id=None, security=security)
    federation = enrolment.federation
    aggregator = enrolment.party(AGGREGATOR, "aggregator")
    scheme = SecAggServer.configured(federation, security.min_participants, STAGE_TIMEOUT)
    session = session_of(scheme, federation.roster)
    engine = RoundEngine(scheme, RoundStore(), federation.roster, RoundConfig(security.min_participants, n))
    service = LyingAggregator(engine, federation, session, aggregator.identity, lie)
    server, port = start_server(service.register, "127.0.0.1", 0, workers=2 * n + 8, tls=aggregator.tls(enrolment.ca))
    sites = [p for p in enrolment.parties if p.name.role == SITE]
    clients = [securefl.connect(f"127.0.0.1:{port}", identity=p.identity, federation=federation,
                                tls=p.tls(enrolment.ca)) for p in sites]
    try:
        yield LyingFederation([p.identity for p in sites], service, clients)
    finally:
        for client in clients:
            client.close()
        server.stop(0)
        engine.stop()


def refusals(outcomes: list[Any]) -> list[str]:
    return [str(o) for o in outcomes if isinstance(o, Exception)]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- cheating clients -----------------------------------------------------------------------


class InconsistentSeedDealer(SecAggParticipant):
    """Deals shares of another seed than the one it masks with and commits to."""

    def share_keys(self) -> secagg_pb2.ShareKeysRequest:
        if self._share_message is None:
            real = self.self_seed
            self.self_seed = bytes(SEED_BYTES)
            request = super().share_keys()
            self.self_seed = real
            request.self_seed_commitment = self_seed_commitment(self.round_id, self._view().digest, self.client_id, real)
            sign_stage_message(request, self.identity.sign)
        return self._share_message


class InconsistentKeyDealer(SecAggParticipant):
    """Deals shares of another mask key than the one it advertised."""

    def share_keys(self) -> secagg_pb2.ShareKeysRequest:
        if self._share_message is None:
            real, self.mask_key = self.mask_key, keys.new_private_key()
            super().share_keys()
            self.mask_key = real
        return self._share_message


class LyingHolder(SecAggParticipant):
    """Reveals a share it never received in place of one it did."""

    def unmask(self, request: secagg_pb2.UnmaskRequest) -> secagg_pb2.UnmaskResponse:
        response = super().unmask(request)
        forged = response.seed_shares[0]
        forged.share = bytes(len(forged.share) - 1) + b"\x01"
        sign_stage_message(response, self.identity.sign)
        return response


class MismatchedCommitmentDealer(SecAggParticipant):
    """Encrypts, for each holder, something other than the shares it committed to."""

    def share_keys(self) -> secagg_pb2.ShareKeysRequest:
        if self._share_message is None:
            request = super().share_keys()
            for share in request.shares:
                share.ciphertext = keys.seal_share(self._channel_key(share.recipient), os.urandom(2 * shamir.SHARE_BYTES),
                                                   share_associated_data(self.round_id, self._view().digest, share))
            sign_stage_message(request, self.identity.sign)
        return self._share_message


def cheat(client: securefl.Client, participant_type: type[SecAggParticipant]) -> None:
    """Make `client` play `participant_type` in its rounds (the attacker runs its own client)."""
    federation = client._pins.federation

    class Cheating(SecAggClient):
        def start(self, round_id: str, vector: np.ndarray, weight: float) -> SecAggClientRound:
            participant = participant_type(client.identity, federation.roster, client.session.secagg,
                                           federation.security, round_id)
            return SecAggClientRound(participant, vector, weight)

    client._scheme = Cheating(client.session, client.identity, federation)
