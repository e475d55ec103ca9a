"""securefl in Flower, through `flwr.simulation.run_simulation` (Ray, CPU, four nodes on
scikit-learn's digits), for each scheme and both of Flower's APIs:

* three secure rounds give the model of Flower's plain FedAvg on the same data and seeds, to
  within the scheme's quantization (secagg) or noise (ckks);
* a node dropping in a middle stage (SecAgg+ after key sharing, HE at submission) leaves a
  round whose model is FedAvg's over the other nodes;
* no message at the ServerApp's grid carries a node's plaintext update: each node marks its
  update with 16 bytes of its own, which the search finds in plain FedAvg's traffic and in
  securefl's own `plain` scheme, and never in a protected round;
* a node without the mod, or without a pin, is left out with an error naming the fix;
* the legacy app with Flower's `SecAggPlusWorkflow` + `secaggplus_mod` swapped back in runs.

Ray starts slowly, so every phase shares one simulation (`flower_apps.scenario_mod` plays the
per-node configuration of each phase)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.compat.common import recorddict_compat as compat  # noqa: E402
from flwr.server import ServerConfig  # noqa: E402
from flwr.server.compat.legacy_context import LegacyContext  # noqa: E402
from flwr.server.strategy import FedAvg as LegacyFedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: E402
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

import flower_apps  # noqa: E402
from flower_apps import (  # noqa: E402
    NODES, enrol_sites, initial_arrays, initial_record, marker, partition_sizes, write_scenario,
)
from securefl.integrations.flower import SecureAggregationWorkflow, SecureFedAvg  # noqa: E402
from securefl.integrations.flower.metering import MeteredGrid  # noqa: E402
from securefl.integrations.flower.ray_start import run_simulation  # noqa: E402
from securefl.enrolment import FEDERATION_FILE  # noqa: E402
from securefl.keyfiles import IDENTITY_PASSPHRASE_ENV  # noqa: E402
from securefl.pki import AGGREGATOR  # noqa: E402
from securefl.simulation import start_keyholder  # noqa: E402

ROUNDS = 3
SCHEMES = ("secagg", "ckks")
TOLERANCE = {"secagg": 1e-4, "ckks": 1e-4}  # after three rounds; each reveal is exact to ~1e-7
DROP = {"secagg": "share_keys", "ckks": "submit"}  # a middle stage of each scheme
DROP_TIMEOUT = 6.0  # seconds before a silent node counts as dropped, in the dropout phases
BACKEND = {"client_resources": {"num_cpus": 1}}


@dataclass
class Phase:
    arrays: list[np.ndarray]
    traffic: list[bytes]
    logs: list[str]
    train_metrics: dict = field(default_factory=dict)

    def carries_a_marker(self) -> bool:
        """Whether any message holds a node's marker, as float32 or float64, as it is or
        multiplied by the node's weight (what a weighted-sum scheme sends)."""
        needles = []
        for pid, examples in enumerate(partition_sizes()):
            for values in (marker(pid).astype(np.float64), marker(pid).astype(np.float64) * examples):
                needles += [values.astype(np.float32).tobytes(), values.tobytes()]
        return any(needle in message for message in self.traffic for needle in needles)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[dict]:
    """Four enrolled sites and a key-holder service (a separate process, mutual TLS)."""
    workdir = tmp_path_factory.mktemp("flower")
    passphrase = secrets.token_urlsafe(16)
    monkeypatch_module.setenv(IDENTITY_PASSPHRASE_ENV, passphrase)  # every party's, Ray's workers included
    new = enrol_sites(workdir, NODES, passphrase)
    keyholder, address = start_keyholder(workdir, new, 2, {IDENTITY_PASSPHRASE_ENV: passphrase}, scheme="ckks")
    yield {"dir": workdir, "federation": workdir / FEDERATION_FILE, "keyholder": address,
           "tls": new.party(AGGREGATOR, "aggregator").tls(new.ca)}
    keyholder.stop()


@pytest.fixture(scope="module")
def scenario_file(federation: dict, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    path = federation["dir"] / "scenario.json"
    monkeypatch_module.setenv(flower_apps.SCENARIO, str(path))
    return path


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run_phases(phases: dict[str, Callable[[Grid, Context], tuple[list[np.ndarray], dict]]],
               client_app: ClientApp) -> dict[str, Phase]:
    """Run each phase in turn in one simulation; each gets a metered grid that keeps its traffic."""
    results: dict[str, Phase] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        for name, phase in phases.items():
            metered, logs = MeteredGrid(grid, keep=True), _Collect()
            logging.getLogger("flwr").addHandler(logs)
            try:
                arrays, metrics = phase(metered, context)
            finally:
                logging.getLogger("flwr").removeHandler(logs)
            results[name] = Phase(arrays, metered.traffic, logs.lines, metrics)

    run_simulation(server, client_app, num_supernodes=NODES, backend_config=BACKEND)
    assert set(results) == set(phases), "a phase did not finish"
    return results


def scenario(federation: dict, **settings) -> None:
    write_scenario(enrolment=str(federation["dir"]), **settings)


def _drop(scheme_or_train: str) -> dict:
    return {"partition": 1, "round": 2, "stage": scheme_or_train}


# -- one simulation, every phase -----------------------------------------------------------------

COMMON = {"fraction_evaluate": 0.0, "min_train_nodes": NODES, "min_available_nodes": NODES}


def _fedavg(federation: dict, drop: dict | None = None, mod: str = "none", rounds: int = ROUNDS):
    def phase(grid: Grid, context: Context):
        scenario(federation, mod=mod, drop=drop)
        result = FedAvg(**COMMON).start(grid=grid, initial_arrays=initial_record(), num_rounds=rounds)
        return result.arrays.to_numpy_ndarrays(), result.train_metrics_clientapp
    return phase


def _secure_fedavg(federation: dict, scheme: str, drop: dict | None = None, rounds: int = ROUNDS, **nodes):
    def phase(grid: Grid, context: Context):
        scenario(federation, drop=drop, **nodes)
        strategy = SecureFedAvg(scheme, federation=federation["federation"], keyholder=federation["keyholder"],
                                tls=federation["tls"], min_clients=2, timeout=DROP_TIMEOUT if drop else 60.0, **COMMON)
        result = strategy.start(grid=grid, initial_arrays=initial_record(), num_rounds=rounds,
                                train_config=ConfigRecord({"lr": 0.1}))
        return result.arrays.to_numpy_ndarrays(), result.train_metrics_clientapp
    return phase


def _legacy(federation: dict, fit_workflow=None, mod: str = "securefl", drop: dict | None = None):
    def phase(grid: Grid, context: Context):
        scenario(federation, mod=mod, drop=drop)
        return _legacy_run(grid, context, fit_workflow)
    return phase


def _secure_workflow(federation: dict, scheme: str, drop: dict | None = None) -> SecureAggregationWorkflow:
    return SecureAggregationWorkflow(scheme, federation=federation["federation"], keyholder=federation["keyholder"],
                                     tls=federation["tls"], min_clients=2, timeout=DROP_TIMEOUT if drop else 60.0)


@pytest.fixture(scope="module")
def phases(federation: dict, scenario_file: Path) -> dict[str, Phase]:
    plan = {"message/fedavg": _fedavg(federation), "message/fedavg-drop": _fedavg(federation, _drop("train")),
            "message/plain": _secure_fedavg(federation, "plain", rounds=1, allow_plain=True),
            "message/downgrade": _secure_fedavg(federation, "plain", rounds=1),
            "message/fedavg-to-securefl-nodes": _fedavg(federation, mod="securefl", rounds=1),
            "message/misconfigured": _secure_fedavg(federation, "secagg", rounds=1, no_mod=[3], no_federation=[2]),
            "legacy/fedavg": _legacy(federation, mod="none"),
            "legacy/fedavg-drop": _legacy(federation, mod="none", drop=_drop("train")),
            "legacy/secaggplus": _legacy(federation, SecAggPlusWorkflow(num_shares=NODES - 1, reconstruction_threshold=2),
                                         mod="secaggplus")}
    for scheme in SCHEMES:
        drop = _drop(DROP[scheme])
        plan[f"message/{scheme}"] = _secure_fedavg(federation, scheme)
        plan[f"message/{scheme}-drop"] = _secure_fedavg(federation, scheme, drop)
        plan[f"legacy/{scheme}"] = _legacy(federation, _secure_workflow(federation, scheme))
        plan[f"legacy/{scheme}-drop"] = _legacy(federation, _secure_workflow(federation, scheme, drop), drop=drop)
    return run_phases(plan, flower_apps.app)


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_message_api_three_rounds_give_fedavgs_model(phases: dict[str, Phase], scheme: str):
    fedavg, secure = phases["message/fedavg"], phases[f"message/{scheme}"]
    assert max_difference(fedavg.arrays, initial_arrays()) > 0.01  # training moved the model
    assert max_difference(secure.arrays, fedavg.arrays) < TOLERANCE[scheme]
    for server_round in range(1, ROUNDS + 1):  # train metrics are averaged securely too
        assert secure.train_metrics[server_round]["train_loss"] == pytest.approx(
            fedavg.train_metrics[server_round]["train_loss"], abs=1e-4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_message_api_node_dropping_mid_round_leaves_fedavg_of_the_others(phases: dict[str, Phase], scheme: str):
    dropped = phases[f"message/{scheme}-drop"]
    assert any(f"average of {NODES - 1} contributions" in line for line in dropped.logs)
    assert max_difference(dropped.arrays, phases["message/fedavg-drop"].arrays) < TOLERANCE[scheme]
    assert max_difference(dropped.arrays, phases["message/fedavg"].arrays) > 10 * TOLERANCE[scheme]


def test_message_api_grid_traffic_carries_no_plaintext_update(phases: dict[str, Phase]):
    assert phases["message/fedavg"].carries_a_marker()  # the search finds a plaintext update...
    assert phases["message/plain"].carries_a_marker()  # ...also on securefl's own path, unprotected
    for name in (*SCHEMES, *(f"{s}-drop" for s in SCHEMES), "misconfigured"):
        assert phases[f"message/{name}"].traffic and not phases[f"message/{name}"].carries_a_marker(), name


def test_nodes_without_the_mod_or_a_pin_are_left_out_with_the_fix_named(phases: dict[str, Phase]):
    logs = "\n".join(phases["message/misconfigured"].logs)
    assert "does it run securefl_mod" in logs
    assert "securefl-federation" in logs  # the missing pin's setting is named
    assert f"average of {NODES - 2} contributions" in logs


def test_securefl_nodes_refuse_a_plain_train_message(phases: dict[str, Phase]):
    """A ServerApp (or a malicious aggregator) asking securefl nodes for a plaintext update gets
    nothing: every node refuses, no update leaves it, nothing is aggregated."""
    refused = phases["message/fedavg-to-securefl-nodes"]
    assert any(f"Received 0 results and {NODES} failures" in line for line in refused.logs)
    assert any("sent a plain train message" in line for line in refused.logs)
    assert not refused.carries_a_marker()
    assert refused.arrays == []


def test_securefl_nodes_refuse_a_downgrade_to_the_plain_scheme(phases: dict[str, Phase]):
    """A ServerApp that runs securefl's unprotected plain scheme gets no node that has not
    allowed it (`securefl-allow-plain`): the session is refused at the hello."""
    downgraded = phases["message/downgrade"]
    assert any("does not allow it" in line for line in downgraded.logs)
    assert downgraded.arrays == [] and not downgraded.carries_a_marker()


# -- legacy API --------------------------------------------------------------------------------

def _legacy_strategy() -> LegacyFedAvg:
    return LegacyFedAvg(fraction_evaluate=0.0, min_fit_clients=NODES, min_available_clients=NODES,
                        on_fit_config_fn=lambda server_round: {"server-round": server_round},
                        initial_parameters=ndarrays_to_parameters(initial_arrays()))


def _legacy_run(grid: Grid, context: Context, fit_workflow=None) -> tuple[list[np.ndarray], dict]:
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=ROUNDS), strategy=_legacy_strategy())
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    record = legacy.state.array_records[MAIN_PARAMS_RECORD]
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True)), {}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_legacy_api_three_rounds_give_fedavgs_model(phases: dict[str, Phase], scheme: str):
    assert max_difference(phases["legacy/fedavg"].arrays, initial_arrays()) > 0.01
    assert max_difference(phases[f"legacy/{scheme}"].arrays, phases["legacy/fedavg"].arrays) < TOLERANCE[scheme]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_legacy_api_node_dropping_mid_round_leaves_fedavg_of_the_others(phases: dict[str, Phase], scheme: str):
    dropped = phases[f"legacy/{scheme}-drop"]
    assert any(f"average of {NODES - 1} contributions" in line for line in dropped.logs)
    assert max_difference(dropped.arrays, phases["legacy/fedavg-drop"].arrays) < TOLERANCE[scheme]


def test_legacy_api_grid_traffic_carries_no_plaintext_update(phases: dict[str, Phase]):
    assert phases["legacy/fedavg"].carries_a_marker()
    for name in (*SCHEMES, *(f"{s}-drop" for s in SCHEMES)):
        assert phases[f"legacy/{name}"].traffic and not phases[f"legacy/{name}"].carries_a_marker(), name


def test_legacy_app_runs_with_flowers_secaggplus_swapped_back_in(phases: dict[str, Phase]):
    """The same legacy app with Flower's own secure aggregation: `SecAggPlusWorkflow` as the fit
    workflow and `secaggplus_mod` on the nodes, nothing else changed."""
    # SecAgg+ quantizes to 2^22 levels over [-8, 8]: a coarser grid than securefl's
    assert max_difference(phases["legacy/secaggplus"].arrays, phases["legacy/fedavg"].arrays) < 1e-3
