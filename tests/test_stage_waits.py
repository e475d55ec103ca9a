"""How the engine wakes clients that wait (in a long poll) for their next SecAgg+ stage."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from securefl.masking.server import ADVERTISE, SHARE
from securefl.rounds.engine import RoundEngine
from securefl.rounds.scheme import RoundConfig
from securefl.rounds.store import RoundStore

from tests.secagg_attacks import wait_for
from tests.secagg_rounds import Enrolment


def test_a_waiting_client_looks_for_its_next_stage_when_a_stage_opens_not_at_every_other_answer():
    """Each of n waiting clients re-checked its stage at every other client's answer (and every
    deadline tick): O(n^2) thread wake-ups per stage on the aggregator."""
    enrolment = Enrolment(6)
    engine = RoundEngine(enrolment.server, RoundStore(), enrolment.roster, RoundConfig(2, 6), clock=enrolment.clock)
    try:
        for client_id in enrolment.ids:
            engine.join(client_id, "r1")
        jobs = {i.client_id: enrolment.client(i).begin("r1") for i in enrolment.identities}
        adverts = {}
        for client_id in enrolment.ids:
            stage = engine.await_stage("r1", client_id, 0)
            assert stage.name == ADVERTISE
            adverts[client_id] = jobs[client_id].answer(stage)
        waiting, answering = enrolment.ids[:3], enrolment.ids[3:]
        for client_id in waiting:
            engine.answer_stage("r1", client_id, ADVERTISE, adverts[client_id])

        scheme_round = engine.get("r1").scheme_round
        looked_up = []
        stage_for = scheme_round.stage_for

        def counted_stage_for(client_id, submitted):
            looked_up.append(client_id)
            return stage_for(client_id, submitted)

        scheme_round.stage_for = counted_stage_for
        with ThreadPoolExecutor(len(waiting)) as pool:
            next_stages = [pool.submit(engine.await_stage, "r1", client_id, 30) for client_id in waiting]
            assert wait_for(lambda: len(looked_up) == len(waiting))  # each looked once, found nothing, waits
            for client_id in answering:  # the last answer opens the share stage
                engine.answer_stage("r1", client_id, ADVERTISE, adverts[client_id])
                time.sleep(0.1)  # time for a woken client to look again (and for two deadline ticks)
            assert [f.result(timeout=30).name for f in next_stages] == [SHARE] * len(waiting)
        assert sorted(looked_up) == sorted(waiting * 2)
    finally:
        engine.stop()

