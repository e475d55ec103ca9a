"""Client rounds kept outside the client process between stages (what the Flower transport
does): a SecAgg+ round whose every client is exported and resumed around each stage gives the
exact sum, whatever drops; a client answers each stage once; the kept state opens only for its
identity and binding. And a site refuses the aggregator's downgrade to the plain scheme, over
real gRPC."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.client import connect
from securefl.errors import InvalidInput, VerificationFailed
from securefl.identity import Identity, Roster
from securefl.masking.client import SecAggClient
from securefl.masking.server import ADVERTISE, MASKED, SECAGG, SHARE, UNMASK, SecAggServer, secagg_config
from securefl.rounds.inprocess import InProcessFederation, ManualClock
from securefl.rounds.scheme import Protected, RoundConfig, Stage
from securefl.rounds.sealed import seal, unseal
from securefl.simulation import LocalFederation
from securefl.v1 import aggregator_pb2, suspended_pb2


class KeptOutside:
    """A client half whose round lives only as exported bytes between stages."""

    def __init__(self, scheme: SecAggClient) -> None:
        self.scheme, self.name, self.interactive = scheme, scheme.name, scheme.interactive
        self.exports = 0

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> _Suspended:
        return _Suspended(self, round_id, self.scheme.start(round_id, vector, weight).export())


class _Suspended:
    def __init__(self, owner: KeptOutside, round_id: str, state: bytes) -> None:
        self.owner, self.round_id, self.state = owner, round_id, state

    def _step(self, work):  # noqa: ANN001, ANN202
        job = self.owner.scheme.resume(self.round_id, self.state)
        result = work(job)
        self.state, self.owner.exports = job.export(), self.owner.exports + 1
        return result

    def answer(self, stage: Stage) -> bytes:
        return self._step(lambda job: job.answer(stage))

    def protect(self, stage: Stage) -> Protected:
        return self._step(lambda job: job.protect(stage))


def secagg_federation(n: int) -> tuple[InProcessFederation, dict[str, KeptOutside], list[str], int]:
    identities = [Identity.generate(f"c{i}") for i in range(n)]
    roster = Roster.of(identities)
    config = secagg_config(n, value_bound=10.0, max_weight=10.0)
    clock = ManualClock()
    server = SecAggServer(config, roster, min_clients=2, stage_timeout=30, clock=clock)
    session = aggregator_pb2.Session(scheme=SECAGG)
    server.describe(session)
    clients = {i.client_id: KeptOutside(SecAggClient(session, i, roster)) for i in identities}
    federation = InProcessFederation.start(server, clients, identities, RoundConfig(2, n), clock, step_seconds=31)
    return federation, clients, sorted(clients), config.frac_bits


@pytest.mark.parametrize("drops", [{}, {"c2": MASKED}, {"c1": SHARE, "c4": UNMASK}])
def test_a_secagg_round_kept_outside_the_clients_between_stages_gives_the_exact_sum(rng, drops):
    federation, clients, ids, frac_bits = secagg_federation(6)
    vectors = {cid: rng.integers(-2**16, 2**16, size=9) * 2.0 ** -frac_bits for cid in ids}
    average = federation.run("r1", vectors, {cid: 1.0 for cid in ids}, drops).average
    contributors = [cid for cid in ids if drops.get(cid) not in (SHARE, MASKED)]
    assert np.array_equal(average, sum(vectors[cid] for cid in contributors) / len(contributors))
    assert sum(c.exports for c in clients.values()) >= 3 * len(contributors)


def _client_round(round_id: str = "r1"):  # noqa: ANN202
    identity = Identity.generate("c0")
    session = aggregator_pb2.Session(scheme=SECAGG, secagg=secagg_config(3))
    scheme = SecAggClient(session, identity, Roster.of([identity]))
    return scheme, scheme.start(round_id, np.zeros(4), 1.0)


def test_a_resumed_round_still_answers_each_stage_once_and_refuses_another_rounds_state():
    scheme, job = _client_round()
    job.answer(Stage(ADVERTISE))
    resumed = scheme.resume("r1", job.export())
    with pytest.raises(InvalidInput, match="a second time"):
        resumed.answer(Stage(ADVERTISE))
    with pytest.raises(InvalidInput, match="belongs to round"):
        scheme.resume("r2", job.export())


def test_the_update_leaves_the_kept_state_once_masked_and_is_masked_once():
    identities = [Identity.generate(f"c{i}") for i in range(3)]
    roster, clock = Roster.of(identities), ManualClock()
    server = SecAggServer(secagg_config(3), roster, min_clients=2, stage_timeout=30, clock=clock)
    session = aggregator_pb2.Session(scheme=SECAGG)
    server.describe(session)
    round_ = server.new_round("r1", RoundConfig(2, 3), clock())
    jobs = {i.client_id: SecAggClient(session, i, roster).start("r1", np.ones(4), 1.0) for i in identities}
    for stage in (ADVERTISE, SHARE):
        for cid, job in jobs.items():
            round_.answer(cid, stage, job.answer(round_.stage_for(cid, False)))
    job, masked_stage = jobs["c0"], round_.stage_for("c0", False)
    assert suspended_pb2.SecAggClientState.FromString(job.export()).encoded_input
    job.protect(masked_stage)
    assert not suspended_pb2.SecAggClientState.FromString(job.export()).encoded_input
    with pytest.raises(InvalidInput, match="a second time"):
        job.protect(masked_stage)


def test_a_round_begun_without_its_update_takes_it_once_before_masking():
    scheme, _ = _client_round()
    job = scheme.begin("r1")
    job.answer(Stage(ADVERTISE))
    with pytest.raises(InvalidInput, match="no update to mask"):
        job.protect(Stage(MASKED))
    resumed = scheme.resume("r1", job.export())
    resumed.provide(np.ones(4), 1.0)
    with pytest.raises(InvalidInput, match="already has its update"):
        resumed.provide(np.zeros(4), 1.0)


def test_sealed_state_opens_only_for_its_identity_and_binding():
    identity, other = Identity.generate("a"), Identity.generate("b")
    sealed = seal(identity, ("run", "node", "r1"), b"secret state")
    assert unseal(identity, ("run", "node", "r1"), sealed) == b"secret state"
    assert b"secret state" not in sealed
    for who, binding in ((other, ("run", "node", "r1")), (identity, ("run", "node", "r2")),
                         (identity, ("run", "node2", "r1")), (identity, ("runnode", "", "r1"))):
        with pytest.raises(VerificationFailed):
            unseal(who, binding, sealed)
    tampered = bytearray(sealed)
    tampered[20] ^= 1
    with pytest.raises(VerificationFailed):
        unseal(identity, ("run", "node", "r1"), bytes(tampered))


def test_a_site_refuses_an_aggregators_downgrade_to_the_plain_scheme_over_grpc():
    with LocalFederation(2, scheme="plain") as federation:
        site = connect(federation.aggregator_address, identity=federation.identities[0], roster=federation.roster)
        with pytest.raises(VerificationFailed, match="plain scheme"):
            site.aggregate(np.ones(4), weight=1.0)
        site.close()
