"""securefl-example: the ServerApp. Flower's quickstart with SecureFedAvg in place of FedAvg."""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from securefl.federation import Federation
from securefl.integrations.flower import SecureFedAvg
from securefl.tls import TlsConfig
from securefl_example.enrolment import enrol_simulated_sites
from securefl_example.task import Net

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    enrolment = Path(config["securefl-federation"]).expanduser().parent
    federation = enrol_simulated_sites(enrolment, config["securefl-simulated-sites"])  # simulation only

    keyholder = config["securefl-keyholder"] or None  # bfv, ckks: the key-holder, reached as the aggregator
    tls = TlsConfig.from_files(enrolment / "aggregator.tls.crt", enrolment / "aggregator.tls.key",
                               Federation.load(federation).ca_certificate) if keyholder else None
    strategy = SecureFedAvg(
        config["scheme"],  # securefl: "secagg" (no key-holder), "bfv" or "ckks"
        federation=federation,
        keyholder=keyholder,
        tls=tls,
        fraction_train=config["fraction-train"],
        fraction_evaluate=config["fraction-evaluate"],
    )
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(Net().state_dict()),
                            train_config=ConfigRecord({"lr": config["lr"]}), num_rounds=config["num-server-rounds"])
    for server_round, metrics in result.evaluate_metrics_clientapp.items():
        print(f"round {server_round}: test accuracy {metrics['eval_acc']:.3f}")
