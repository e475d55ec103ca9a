"""`run_simulation` with Ray started first, and started again when its start-up times out.

On a loaded machine Ray's own start-up (its GCS server and raylet must come up within about 30
seconds, a limit Ray fixes) sometimes times out. Flower starts the ServerApp's thread before
Ray, so a failed start there leaves a ServerApp running against nodes that never answer. Here
Ray is started before the simulation, as Flower's Ray backend would start it (its workers get
this process's import path), and only a start-up timeout is retried, after a pause; Flower's
backend then finds Ray running and uses it (and shuts it down at the end, as usual)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("flwr")
ATTEMPTS = 3
PAUSE_SECONDS = 10.0
_START_UP_FAILURES = ("gcs_server_port", "timed out during startup")


def _did_not_start(error: BaseException | None) -> bool:
    while error is not None:
        if any(text in str(error) for text in _START_UP_FAILURES):
            return True
        error = error.__cause__ or error.__context__
    return False


def start_ray(**init_args: Any) -> None:
    """Start Ray for a simulation (`init_args`: the backend config's), retrying start-up timeouts."""
    import ray

    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["PYTHONPATH"] = pythonpath  # as Flower's Ray backend sets it for its workers
    options = {"include_dashboard": False, "logging_level": "WARNING", **init_args}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **options)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises plain RuntimeError/Exception on start-up
            ray.shutdown()
            if attempt == ATTEMPTS or not _did_not_start(exc):
                raise
            log.warning("Ray did not start (attempt %d of %d): %s; trying again", attempt, ATTEMPTS, exc)
            time.sleep(PAUSE_SECONDS * attempt)


def run_simulation(server_app: Any, client_app: Any, num_supernodes: int, **options: Any) -> None:
    from flwr.simulation import run_simulation as flower_run_simulation

    start_ray(**(options.get("backend_config") or {}).get("init_args", {}))
    flower_run_simulation(server_app, client_app, num_supernodes=num_supernodes, **options)
