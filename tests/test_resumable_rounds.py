"""Client rounds kept outside the client process between stages, as the Flower transport keeps
them: a SecAgg+ round begun without its update, exported and resumed around every stage, and
given its update at the masked-input stage, gives the exact sum whatever drops; the update never
enters the kept state and is masked once; the kept state opens only for its identity and
binding. And a site refuses the aggregator's downgrade to the plain scheme, over real gRPC."""

from __future__ import annotations

import numpy as np
import pytest

from secagg_rounds import Enrolment
from securefl.client import connect
from securefl.errors import InvalidInput, VerificationFailed
from securefl.identity import Identity
from securefl.masking.client import SecAggClient
from securefl.masking.server import ADVERTISE, CONFIRM, MASKED, SHARE, UNMASK
from securefl.rounds.inprocess import InProcessFederation
from securefl.rounds.scheme import Protected, RoundConfig, Stage
from securefl.rounds.sealed import seal, unseal
from securefl.simulation import LocalFederation


class KeptOutside:
    """A client half whose round lives only as exported bytes between stages, begun without its
    update and given it at the masked-input stage (what `securefl_mod` does)."""

    def __init__(self, scheme: SecAggClient) -> None:
        self.scheme, self.name, self.interactive = scheme, scheme.name, scheme.interactive
        self.exports = 0

    def start(self, round_id: str, vector: np.ndarray, weight: float) -> _Suspended:
        return _Suspended(self, round_id, self.scheme.begin(round_id).export(), (vector, weight))


class _Suspended:
    def __init__(self, owner: KeptOutside, round_id: str, state: bytes, update: tuple[np.ndarray, float]) -> None:
        self.owner, self.round_id, self.state, self.update = owner, round_id, state, update

    def _step(self, work):  # noqa: ANN001, ANN202
        job = self.owner.scheme.resume(self.round_id, self.state)
        result = work(job)
        self.state, self.owner.exports = job.export(), self.owner.exports + 1
        return result

    def answer(self, stage: Stage) -> bytes:
        return self._step(lambda job: job.answer(stage))

    def protect(self, stage: Stage) -> Protected:
        def masked(job) -> Protected:  # noqa: ANN001
            job.provide(*self.update)
            return job.protect(stage)
        return self._step(masked)


@pytest.mark.parametrize("drops", [{}, {"c002": MASKED}, {"c001": SHARE, "c004": UNMASK}, {"c003": CONFIRM}])
def test_a_secagg_round_kept_outside_the_clients_between_stages_gives_the_exact_sum(rng, drops):
    enrolment = Enrolment(6)
    clients = {i.client_id: KeptOutside(enrolment.client(i)) for i in enrolment.identities}
    federation = InProcessFederation.start(enrolment.server, clients, enrolment.identities, RoundConfig(2, 6),
                                           enrolment.clock, step_seconds=31)
    step = 2.0 ** -enrolment.config.frac_bits
    vectors = {cid: rng.integers(-2**16, 2**16, size=9) * step for cid in enrolment.ids}
    average = federation.run("r1", vectors, {cid: 1.0 for cid in enrolment.ids}, drops).average
    contributors = [cid for cid in enrolment.ids if drops.get(cid) not in (ADVERTISE, SHARE, MASKED)]
    exact = sum(vectors[cid] for cid in contributors) / len(contributors)
    assert np.array_equal(average, exact.astype(enrolment.server.result_dtype))
    assert sum(c.exports for c in clients.values()) >= 4 * len(contributors)


def test_a_round_holds_its_update_only_between_provide_and_its_masked_input():
    enrolment = Enrolment(3)
    scheme = enrolment.client(enrolment.identities[0])
    job = scheme.begin("r1")
    job.answer(Stage(ADVERTISE))
    with pytest.raises(InvalidInput, match="no update to mask"):
        job.protect(Stage(MASKED))
    resumed = scheme.resume("r1", job.export())
    resumed.provide(np.ones(4), 1.0)
    with pytest.raises(InvalidInput, match="already has its update"):
        resumed.provide(np.zeros(4), 1.0)
    with pytest.raises(InvalidInput, match="not exported"):
        resumed.export()
    with pytest.raises(InvalidInput, match="belongs to round"):
        scheme.resume("r2", job.export())


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
        site = connect(federation.aggregator_address, identity=federation.identities[0],
                       federation=federation.federation, tls=federation.credentials("site", "site-1"))
        with pytest.raises(VerificationFailed, match="plain scheme"):
            site.aggregate(np.ones(4), weight=1.0)
        site.close()
