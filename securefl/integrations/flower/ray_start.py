"""`run_simulation` that survives Ray failing to start.

On a loaded machine Ray's own start-up (its GCS server writing its port file) sometimes times
out before any app code has run: Flower then ends the simulation with "Simulation Runtime
crashed". Only that failure is retried; any other error is raised as is. The ServerApp must
not depend on the aborted attempt (it never got a node's reply)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("flwr")
ATTEMPTS = 3


def _ray_did_not_start(error: BaseException | None) -> bool:
    while error is not None:
        if "Timed out waiting for file" in str(error) and "gcs_server_port" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def run_simulation(server_app: Any, client_app: Any, num_supernodes: int, **options: Any) -> None:
    from flwr.simulation import run_simulation as flower_run_simulation

    for attempt in range(1, ATTEMPTS + 1):
        try:
            return flower_run_simulation(server_app, client_app, num_supernodes=num_supernodes, **options)
        except RuntimeError as exc:
            if attempt == ATTEMPTS or not _ray_did_not_start(exc):
                raise
            log.warning("Ray did not start (attempt %d of %d); starting the simulation again", attempt, ATTEMPTS)
