"""`kill -9` at every step of a round, over real processes.

The aggregator is started with a pause point armed (`rounds/pause.py`): when it reaches that
line it stops itself and the test kills it there with SIGKILL, then starts a new aggregator
process on the same store. The clients, real gRPC clients in threads,
ride through the restart. Every round must end with the exact weighted average of all its
clients — a lost acknowledged submission, one counted twice, or a half-added one would each
show as a wrong average — or with a clear error; never with a wrong sum.

Plain runs with a checkpoint after every submission (restarts then find acknowledged updates in
the checkpoint, and resends are acknowledged without being added again); ckks and secagg with
the default interval (acknowledged updates are owed, and their clients resend them)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from securefl.rounds.pause import PAUSE_AT_ENV, PAUSE_FILE_ENV
from securefl.simulation import LocalFederation, SecAggSettings
from tests.conftest import weighted_average

COMMON = ["submission.validated#2", "submission.added#2", "submission.logged#2", "round.closing",
          "reveal.started", "reveal.done", "result.stored"]
POINTS = {
    "plain": ["checkpoint.written#1", *COMMON],  # the first is reached whatever the interleaving (at the latest, at close)
    # with the default interval, the first checkpoint is the close's: every client is acknowledged by then
    "ckks": [*COMMON, "checkpoint.written#1", "keyholder.answering"],
    "secagg": ["stage.answered#2", "stage.answered#5", *COMMON, "checkpoint.written#1", "stage.answered#8"],
}
WEIGHTS = [1.0, 2.0, 3.5]
TOLERANCE = {"plain": 1e-6, "ckks": 1e-4, "secagg": 2e-3}
FEDERATION_OPTIONS = {
    "plain": dict(aggregator_args=["--checkpoint-seconds", "0"]),
    "ckks": dict(preset="add-only-4096"),
    "secagg": dict(secagg=SecAggSettings(stage_timeout=20.0, value_bound=10.0, max_weight=10.0)),
}


def arm(federation: LocalFederation, point: str) -> dict[str, str]:
    marker = federation.workdir / "paused"
    marker.unlink(missing_ok=True)
    return {PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(marker)}


def wait_until_paused(federation: LocalFederation, point: str, timeout: float = 60.0) -> None:
    marker: Path = federation.workdir / "paused"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"the aggregator never reached {point}")
        time.sleep(0.02)


@pytest.mark.parametrize("scheme", POINTS)
def test_a_round_killed_at_any_point_ends_with_the_exact_sum(scheme, rng):
    points = POINTS[scheme]
    with LocalFederation(3, scheme=scheme, **FEDERATION_OPTIONS[scheme]) as federation, ThreadPoolExecutor(3) as pool:
        for index, point in enumerate(points):
            federation.restart_aggregator(env=arm(federation, point))
            updates = [rng.uniform(-5, 5, size=700) for _ in WEIGHTS]
            waiting = [pool.submit(client.aggregate, update, weight=weight, round_id=f"round-{index}", timeout=90)
                       for client, update, weight in zip(federation.clients, updates, WEIGHTS)]
            wait_until_paused(federation, point)
            federation.restart_aggregator(crash=True)
            expected = weighted_average(updates, WEIGHTS)
            for future in waiting:
                average = future.result(timeout=120)
                error = np.abs(average - expected).max() / np.abs(expected).max()
                assert error < TOLERANCE[scheme], f"{scheme}: a wrong average after a crash at {point}"
