"""SecAgg+ survives an aggregator crash: 100 clients over real gRPC, 10 % of them dropping out
across all four stages, and the aggregator killed with SIGKILL in the middle of the masked-input
stage. The restarted aggregator replays the round's log (keys, routed shares, deadlines) into a
fresh server round, the clients ride through, and the round ends with the exact sum."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from securefl.masking.server import ADVERTISE, MASKED, SHARE, UNMASK
from securefl.rounds.pause import PAUSE_AT_ENV, PAUSE_FILE_ENV
from securefl.simulation import LocalFederation, SecAggSettings, SimulatedDropout
from tests.conftest import weighted_average

N = 100
DROPS = {3: ADVERTISE, 17: ADVERTISE, 29: ADVERTISE, 41: SHARE, 52: SHARE, 64: SHARE,
         71: MASKED, 80: MASKED, 88: UNMASK, 95: UNMASK}
SETTINGS = SecAggSettings(stage_timeout=8.0, value_bound=10.0, max_weight=10.0)


def test_a_hundred_client_round_with_dropouts_at_every_stage_survives_a_crash(rng, tmp_path):
    marker = tmp_path / "paused"
    with LocalFederation(N, scheme="secagg", min_clients=80, secagg=SETTINGS) as federation, ThreadPoolExecutor(N) as pool:
        federation.restart_aggregator(env={PAUSE_AT_ENV: "submission.logged#40", PAUSE_FILE_ENV: str(marker)})
        updates = [rng.uniform(-5, 5, size=200) for _ in range(N)]
        weights = [1.0 + (i % 7) for i in range(N)]

        def one(i: int):
            try:
                return federation.clients[i].aggregate(updates[i], weight=weights[i], round_id="crash",
                                                       simulate_dropout=DROPS.get(i), timeout=240)
            except SimulatedDropout:
                return None

        waiting = [pool.submit(one, i) for i in range(N)]
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline, "the round never reached its 40th masked input"
            time.sleep(0.05)
        federation.restart_aggregator(crash=True)
        results = [future.result(timeout=300) for future in waiting]

    included = [i for i in range(N) if DROPS.get(i) not in (ADVERTISE, SHARE, MASKED)]
    expected = weighted_average([updates[i] for i in included], [weights[i] for i in included])
    resolution = 2.0 ** -federation.clients[0].session.secagg.frac_bits
    for i, result in enumerate(results):
        if i in DROPS:
            assert result is None
        else:
            assert np.abs(result - expected).max() <= 4 * resolution
