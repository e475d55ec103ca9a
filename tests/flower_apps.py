"""Flower apps for the Flower tests: a small PyTorch model trained on scikit-learn's digits,
split unevenly over the nodes, each with its own deterministic training (seeded by node and
round), so that any two runs of the same rounds can be compared value for value.

Each node's model carries a `marker` buffer of four float32 values of its own: a plaintext
update carries that node's 16 marker bytes, a protected one must not.

What varies between the phases of one simulation (which node drops where, which node lacks
the mod or a pin, which secure-aggregation mod nodes run) is each node's own configuration in a
deployment. A simulation has one config for all nodes, and Ray starts slowly (and starting it
several times in one process is fragile), so all phases share one simulation and
`scenario_mod` plays that per-node configuration from a JSON file the test's ServerApp writes
before each phase (`SECUREFL_FLOWER_SCENARIO`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from sklearn.datasets import load_digits

from securefl.integrations.flower import securefl_mod
from securefl.enrolment import NewFederation, create_federation, write_federation
from securefl.federation import SecurityParameters
from securefl.integrations.flower.node import ALLOW_PLAIN, FEDERATION, IDENTITY
from securefl.integrations.flower.wire import StageRequest, read_request

NODES = 4
CUTS = (300, 700, 1200)  # uneven partitions of the 1,797 digits: 300, 400, 500, 597 examples
SCENARIO = "SECUREFL_FLOWER_SCENARIO"


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(64, 16)
        self.out = torch.nn.Linear(16, 10)
        self.register_buffer("marker", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def marker(partition: int) -> np.ndarray:
    return np.array([1.2345678, -2.3456789, 3.4567891, -4.5678912], np.float32) + np.float32(partition)


def initial_arrays() -> list[np.ndarray]:
    torch.manual_seed(0)
    return [v.numpy().copy() for v in Net().state_dict().values()]


def initial_record() -> ArrayRecord:
    return ArrayRecord({name: Array(a) for name, a in zip(Net().state_dict(), initial_arrays())})


def partition_sizes() -> list[int]:
    return np.diff([0, *CUTS, len(load_digits().target)]).tolist()


def partition(pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    part = np.split(order, CUTS)[pid]
    return torch.tensor(x[part] / 16.0, dtype=torch.float32), torch.tensor(y[part])


def train_arrays(arrays: list[np.ndarray], pid: int, server_round: int) -> tuple[list[np.ndarray], int, float]:
    """One epoch of SGD from the global model; the same inputs give the same outputs."""
    torch.set_num_threads(1)
    torch.manual_seed(1000 * pid + server_round)
    model = Net()
    model.load_state_dict({k: torch.tensor(a) for k, a in zip(model.state_dict(), arrays)})
    x, y = partition(pid)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.tensor(0.0)
    for batch in torch.randperm(len(y)).split(32):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimiser.step()
    model.marker.copy_(torch.from_numpy(marker(pid)))
    return [v.numpy().copy() for v in model.state_dict().values()], len(y), float(loss)


def enrol_sites(directory: Path, sites: int, passphrase: str) -> NewFederation:
    """A federation of `sites` sites (and a key-holder) enrolled centrally, its files written to
    `directory` under `passphrase` (SECUREFL_IDENTITY_PASSPHRASE of every party)."""
    new = create_federation([f"site-{i}" for i in range(sites)], name="flower-tests",
                            security=SecurityParameters(min_participants=2))
    write_federation(directory, new, passphrase)
    return new


# -- the per-node configuration of each phase --------------------------------------------------

def write_scenario(**scenario: Any) -> None:
    Path(os.environ[SCENARIO]).write_text(json.dumps(scenario))


def _scenario() -> dict[str, Any]:
    return json.loads(Path(os.environ[SCENARIO]).read_text())


class SimulatedDropout(Exception):
    """A node vanishing at the stage the scenario names."""


def _round_of(msg: Message) -> int:
    config = msg.content.config_records.get("config") or msg.content.config_records.get("fitins.config") or {}
    return int(msg.metadata.group_id or config.get("server-round", 0))


def scenario_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Stands in for each node's own configuration: its identity and pins (as `flwr run` would
    put them in the run config of a simulation), which secure-aggregation mod it runs
    (securefl's, Flower's SecAgg+ or none), where it drops out."""
    s, pid = _scenario(), int(context.node_config["partition-id"])
    settings = {IDENTITY: str(Path(s["enrolment"]) / f"site-{pid}.identity.json"),
                ALLOW_PLAIN: s.get("allow_plain", False)}
    if pid not in s.get("no_federation", []):
        settings[FEDERATION] = str(Path(s["enrolment"]) / "federation.json")
    node_context = Context(context.run_id, context.node_id, context.node_config, context.state,
                           {**context.run_config, **settings})
    drop = s.get("drop")
    if drop and drop["partition"] == pid and drop["round"] == _round_of(msg) and msg.metadata.message_type == "train":
        request = read_request(msg.content)
        if drop["stage"] == (request.stage if isinstance(request, StageRequest) else "train"):
            raise SimulatedDropout(f"node {pid} drops at {drop['stage']}")
    mod = None if pid in s.get("no_mod", []) else MODS[s.get("mod", "securefl")]
    return mod(msg, node_context, call_next) if mod else call_next(msg, node_context)


MODS = {"securefl": securefl_mod, "secaggplus": secaggplus_mod, "none": None}


# -- the legacy app: a NumPyClient ----------------------------------------------------------------

class LegacyClient(NumPyClient):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fit(self, parameters, config):  # noqa: ANN001, ANN201 - NumPyClient's signature
        arrays, n, loss = train_arrays(parameters, self.pid, int(config["server-round"]))
        return arrays, n, {"train_loss": loss}


def client_fn(context: Context):  # noqa: ANN201
    return LegacyClient(int(context.node_config["partition-id"])).to_client()


legacy_app = ClientApp(client_fn=client_fn)


# -- the Message API app, which also hands legacy messages to the legacy app ----------------------

app = ClientApp(mods=[scenario_mod])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """FedAvg's train messages carry "arrays" and "config"; the legacy workflows' carry FitIns,
    which the legacy app handles (both APIs share one simulation: Ray starts slowly)."""
    if "arrays" not in msg.content:
        return legacy_app(msg, context)
    arrays, n, loss = train_arrays(msg.content["arrays"].to_numpy_ndarrays(), int(context.node_config["partition-id"]),
                                   int(msg.content["config"]["server-round"]))
    names = msg.content["arrays"].keys()
    reply = RecordDict({"arrays": ArrayRecord({name: Array(a) for name, a in zip(names, arrays)}),
                        "metrics": MetricRecord({"num-examples": n, "train_loss": loss})})
    return Message(reply, reply_to=msg)
