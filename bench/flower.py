"""securefl in Flower beside Flower's own secure aggregation: 10 and 50 nodes × 1,000,000 parameters.

On one simulated federation (Flower's simulation, Ray, `--actors` ClientApps at a time on this
machine), in one run per node count, one training round of each of:

* `fedavg`:          Flower's Message API FedAvg, plaintext (the baseline securefl targets);
* `securefl secagg`: SecureFedAvg(scheme="secagg") + securefl_mod;
* `securefl ckks`:   SecureFedAvg(scheme="ckks") + securefl_mod, with a securefl key-holder process;
* `legacy fedavg`:   Flower's legacy DefaultWorkflow with FedAvg, plaintext (SecAgg+'s baseline);
* `flower secagg+`:  Flower's SecAggPlusWorkflow + secaggplus_mod (legacy API only).

Training is a no-op (each node returns the global model plus its own offset, weight 100), so the
round time is the cost of moving and aggregating the update. Per configuration: the round time
(median of `--rounds` rounds after a warm-up round; Flower's SecAgg+ is timed on one round, it is
slow), the bytes each node sends and receives (every Flower object of every message, counted at
the ServerApp's grid in a separate round), and the node CPU time per round (CPU time of each
ClientApp call, its thread's and securefl's HE encryption workers', summed over the round's
messages, per node). The nodes' ClientApp is `flower_nodes.app` (beside this script, so that
it travels to Ray's workers by name, as under `flwr run`). Each node count runs in a child
process of its own: Ray does not restart reliably within one process.

Run: python bench/flower.py [--nodes 10 50] [--params N] [--rounds N] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from securefl.benchmark.harness import benchmark_parser, envelope, publish
from securefl.benchmark.numbers import MISSING, byte_size, duration, ratio
from securefl.benchmark.tables import Table

HERE = Path(__file__).resolve().parent
CONFIGS = ("fedavg", "securefl-secagg", "securefl-ckks", "legacy-fedavg", "secaggplus")
LABELS = {"fedavg": "Flower FedAvg (plaintext)", "securefl-secagg": "securefl secagg", "securefl-ckks": "securefl ckks",
          "legacy-fedavg": "Flower legacy FedAvg (plaintext)", "secaggplus": "Flower SecAgg+"}


# -- one node count, in a child process ------------------------------------------------------------

def measure(nodes: int, params: int, rounds: int) -> dict:
    """Every configuration on one simulated federation of `nodes` nodes."""
    from flwr.app import Array, ArrayRecord, Context
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from flower_nodes import CPU_LOG, SCENARIO, app as node_app

    from securefl.integrations.flower import SecureFedAvg
    from securefl.integrations.flower.metering import MeteredGrid
    from securefl.integrations.flower.ray_start import run_simulation
    from securefl.enrolment import FEDERATION_FILE, create_federation, write_federation
    from securefl.integrations.flower.node import FEDERATION, IDENTITY
    from securefl.keyfiles import IDENTITY_PASSPHRASE_ENV
    from securefl.pki import AGGREGATOR
    from securefl.masking.graph import choose_params
    from securefl.simulation import start_keyholder

    workdir = Path(tempfile.mkdtemp(prefix="securefl-flower-bench-"))
    passphrase = secrets.token_urlsafe(16)
    os.environ[IDENTITY_PASSPHRASE_ENV] = passphrase  # every party's, Ray's workers included
    enrolment = create_federation([f"site-{i}" for i in range(nodes)], name="flower-bench")
    write_federation(workdir, enrolment, passphrase)
    keyholder, address = start_keyholder(workdir, enrolment, 2, {IDENTITY_PASSPHRASE_ENV: passphrase}, scheme="ckks")
    os.environ[SCENARIO], os.environ[CPU_LOG] = str(workdir / "scenario.json"), str(workdir / "cpu.log")
    settings = {IDENTITY: str(workdir / "site-{partition-id}.identity.json"), FEDERATION: str(workdir / FEDERATION_FILE)}
    model = [np.random.default_rng(0).normal(0, 0.1, size=params).astype(np.float32)]
    common = {"fraction_evaluate": 0.0, "min_train_nodes": nodes, "min_available_nodes": nodes}
    degree, threshold = choose_params(nodes, 0.1, 0.1)  # SecAgg+ gets securefl's graph: like for like
    results: dict[str, dict] = {}

    def message_round(strategy, grid: Grid) -> float:  # noqa: ANN001
        started = time.perf_counter()
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"weights": Array(model[0])}), num_rounds=1)
        return time.perf_counter() - started

    def legacy_round(fit_workflow, grid: Grid, context: Context) -> float:  # noqa: ANN001
        """One DefaultWorkflow round; only its fit workflow is timed (the workflow's node
        registration thread takes seconds to stop)."""
        seconds: list[float] = []

        def timed(grid: Grid, legacy: Context) -> None:
            started = time.perf_counter()
            fit_workflow(grid, legacy)
            seconds.append(time.perf_counter() - started)

        strategy = LegacyFedAvg(fraction_evaluate=0.0, min_fit_clients=nodes, min_available_clients=nodes,
                                initial_parameters=ndarrays_to_parameters(model))
        DefaultWorkflow(fit_workflow=timed)(grid, LegacyContext(context, ServerConfig(num_rounds=1), strategy))
        return seconds[0]

    def measured(name: str, mod: str, grid: Grid, one_round, timed_rounds: int, warm_up: bool) -> dict:  # noqa: ANN001
        """A warm-up round, a round at a metered grid (bytes), then `timed_rounds` rounds (time,
        node CPU); with none, the metered round is also the timed one."""
        def phase(label: str) -> str:
            Path(os.environ[SCENARIO]).write_text(json.dumps({"phase": f"{name}/{label}", "mod": mod,
                                                              "settings": settings}))
            return f"{name}/{label}"

        if warm_up:
            phase("warm-up")
            one_round(grid)
        timed_phase = phase("metered")
        metered = MeteredGrid(grid)
        times = [one_round(metered)]
        if timed_rounds:
            timed_phase = phase("timed")
            times = [one_round(grid) for _ in range(timed_rounds)]
        print(f"{nodes} nodes, {name}: {statistics.median(times):.2f} s per round", flush=True)
        return {"round_seconds": statistics.median(times), "rounds_timed": len(times), "timed_phase": timed_phase,
                "bytes_sent_per_node": sum(metered.received.values()) / nodes,
                "bytes_received_per_node": sum(metered.sent.values()) / nodes}

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        tls = enrolment.party(AGGREGATOR, "aggregator").tls(enrolment.ca)  # the ServerApp is the aggregator
        secure = {scheme: SecureFedAvg(scheme, federation=workdir / FEDERATION_FILE, keyholder=address, tls=tls,
                                       **common) for scheme in ("secagg", "ckks")}
        for name, strategy, mod in (("fedavg", None, "none"), ("securefl-secagg", secure["secagg"], "securefl"),
                                    ("securefl-ckks", secure["ckks"], "securefl")):
            results[name] = measured(name, mod, grid, lambda g, s=strategy: message_round(s or FedAvg(**common), g),
                                     rounds, warm_up=True)
        secaggplus = SecAggPlusWorkflow(num_shares=degree + 1, reconstruction_threshold=threshold)
        for name, workflow, mod, timed_rounds in (("legacy-fedavg", default_fit_workflow, "none", rounds),
                                                  ("secaggplus", secaggplus, "secaggplus", 0)):
            results[name] = measured(name, mod, grid, lambda g, w=workflow: legacy_round(w, g, context),
                                     timed_rounds, warm_up=False)

    try:
        run_simulation(server, node_app, num_supernodes=nodes, backend_config={"client_resources": {"num_cpus": 1}})
    finally:
        keyholder.stop()
    cpu: dict[str, float] = defaultdict(float)
    for line in Path(os.environ[CPU_LOG]).read_text().splitlines():
        label, _, seconds = line.split("\t")
        cpu[label] += float(seconds)
    for result in results.values():
        result["node_cpu_seconds_per_round"] = cpu[result.pop("timed_phase")] / nodes / result["rounds_timed"]
    return {"secaggplus_graph": {"num_shares": degree + 1, "reconstruction_threshold": threshold}, **results}


# -- the report ------------------------------------------------------------------------------------

def tables(report: dict) -> list[Table]:
    """One table per node count: each configuration beside Flower's plaintext FedAvg."""
    out = []
    for nodes, results in report["results"].items():
        base = results["fedavg"]
        rows = []
        for name in CONFIGS:
            r = results.get(name)
            if r is None:
                rows.append([LABELS[name], MISSING, MISSING, MISSING, MISSING, MISSING])
                continue
            rows.append([LABELS[name], duration(r["round_seconds"]), ratio(r["round_seconds"] / base["round_seconds"]),
                         byte_size(r["bytes_sent_per_node"]), byte_size(r["bytes_received_per_node"]),
                         duration(r["node_cpu_seconds_per_round"])])
        secagg, plus = results["securefl-secagg"]["round_seconds"], results["secaggplus"]["round_seconds"]
        graph = results["secaggplus_graph"]
        caption = (f"{nodes} nodes × {report['params']:,} parameters, {report['actors']} ClientApps at a time; both "
                   f"SecAgg+ implementations share each secret among {graph['num_shares'] - 1} neighbours, threshold "
                   f"{graph['reconstruction_threshold']}. securefl secagg is {ratio(plus / secagg)} faster than Flower's "
                   f"SecAgg+ and takes {ratio(secagg / base['round_seconds'])} Flower's plaintext FedAvg round.")
        out.append(Table(f"nodes-{nodes}", ("configuration", "round", "× FedAvg", "sent / node", "received / node",
                                            "node CPU / round"), rows, caption))
    return out


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "flower.json")
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration (SecAgg+: one)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.child.write_text(json.dumps(measure(args.nodes[0], args.params, args.rounds)))
        return
    report = envelope("flower")
    report.update(params=args.params, actors=os.cpu_count(), rounds=args.rounds, results={})
    for nodes in args.nodes:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([sys.executable, __file__, "--nodes", str(nodes), "--params", str(args.params),
                            "--rounds", str(args.rounds), "--child", out.name], check=True)
            report["results"][str(nodes)] = json.loads(Path(out.name).read_text())
    publish(report, tables, args)


if __name__ == "__main__":
    main()
