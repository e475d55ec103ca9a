"""The ClientApp of `bench/flower.py`'s simulated nodes, in a module of its own.

Flower's simulation pickles the ClientApp with every message it hands a node. Defined in the
benchmark script (`__main__`), its functions travel by value, code and all, once per message:
about 0.4 s of the ServerApp process's CPU per 50-node SecAgg+ round here, charged to every
protocol in proportion to its messages. Defined in an importable module they travel by name, as
an app does under `flwr run` (loaded from its `module:attribute` reference). Ray's workers
import this module from the benchmark directory (on the path the driver hands them).

Training is a no-op: each node returns the global model plus its own offset, weight
`EXAMPLES`; the legacy workflows' FitIns go to a NumPyClient doing the same. Every call's CPU
time is logged with the phase the benchmark is in (`SCENARIO`, `CPU_LOG`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from securefl.he.pool import shared_pool
from securefl.integrations.flower import securefl_mod

SCENARIO, CPU_LOG = "SECUREFL_BENCH_SCENARIO", "SECUREFL_BENCH_CPU_LOG"
EXAMPLES = 100
MODS = {"securefl": securefl_mod, "secaggplus": secaggplus_mod}


def scenario() -> dict:
    return json.loads(Path(os.environ[SCENARIO]).read_text())


def process_cpu_seconds(pid: int) -> float:
    try:
        return sum(psutil.Process(pid).cpu_times()[:2])
    except psutil.Error:
        return 0.0  # it ended meanwhile


def cpu_seconds() -> float:
    """This thread's CPU time and that of securefl's HE encryption workers (CKKS encrypts on a
    pool of processes; SecAgg+ and plain FedAvg start none). Asking the pool for its workers is
    a lock and a list; finding every child of a Ray worker (a file per thread in /proc, twice a
    message) was 6 % of a node's sampled time in a SecAgg+ round, charged to the round."""
    pool = shared_pool()
    workers = pool.pids() if pool is not None else []
    return time.thread_time() + sum(process_cpu_seconds(pid) for pid in workers)


def metered(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
    """CPU time of this ClientApp call, logged with the phase it belongs to."""
    s = scenario()
    node_context = Context(context.run_id, context.node_id, context.node_config, context.state,
                           {**context.run_config, **s["settings"]})
    started = cpu_seconds()
    mod = MODS.get(s["mod"])
    try:
        return mod(msg, node_context, call_next) if mod else call_next(msg, node_context)
    finally:
        with open(os.environ[CPU_LOG], "a") as log:
            log.write(f"{s['phase']}\t{context.node_id}\t{cpu_seconds() - started}\n")


def offset(context: Context) -> np.float32:
    """What node `context` adds to the global model: its own, so every update differs."""
    return np.float32(1e-3 * int(context.node_config["partition-id"]))


class Legacy(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.offset = offset(context)

    def fit(self, parameters, config):  # noqa: ANN001, ANN201
        return [p + self.offset for p in parameters], EXAMPLES, {}


def legacy_client(context: Context):  # noqa: ANN201 - a flwr Client
    return Legacy(context).to_client()


legacy = ClientApp(client_fn=legacy_client)
app = ClientApp(mods=[metered])


@app.train()
def train(msg: Message, context: Context) -> Message:
    if "arrays" not in msg.content:  # a legacy workflow's FitIns
        return legacy(msg, context)
    arrays = ArrayRecord({k: Array(v.numpy() + offset(context)) for k, v in msg.content["arrays"].items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": EXAMPLES})}),
                   reply_to=msg)
