"""`SecureAggregationWorkflow`: securefl where Flower's legacy API takes `SecAggPlusWorkflow`.

    workflow = DefaultWorkflow(fit_workflow=SecureAggregationWorkflow("secagg", federation="federation.json"))

As SecAgg+ does, it asks the strategy to `configure_fit`, runs the secure round with the
sampled nodes (`server.SecureRounds`, the nodes running `securefl_mod`), and hands the revealed
average to `Strategy.aggregate_fit` as the parameters of every contributor's `FitRes`. Unlike
SecAgg+, no per-node number of examples or metric is revealed: each `FitRes` carries the mean
weight and the averaged numeric metrics, so the strategy's weighted average is the average."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.common import Code, FitRes, Status
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from ...he.scheme import KeyHolderLink
from ...federation import Federation
from ...tls import TlsConfig
from .server import SecureRounds
from .wire import LEGACY_LAYOUT

log = logging.getLogger("flwr")
LEGACY_WEIGHT_KEY = "num_examples"


class SecureAggregationWorkflow:
    def __init__(self, scheme: str = "secagg", *, federation: Federation | str | Path,
                 keyholder: str | KeyHolderLink | None = None, tls: TlsConfig | None = None, insecure: bool = False,
                 min_clients: int | None = None, timeout: float = 600.0) -> None:
        """The arguments of `SecureFedAvg` without FedAvg's: the strategy is the LegacyContext's."""
        self.secure = SecureRounds(scheme, federation=federation, keyholder=keyholder, tls=tls, insecure=insecure,
                                   min_clients=min_clients, timeout=timeout)

    def __call__(self, grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"SecureAggregationWorkflow runs in a LegacyContext, not a {type(context).__name__}")
        current_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        instructions = context.strategy.configure_fit(server_round=current_round, parameters=parameters,
                                                      client_manager=context.client_manager)
        if not instructions:
            log.info("configure_fit: no clients selected, cancel")
            return
        proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        train = {proxy.node_id: compat.fitins_to_recorddict(fitins, True) for proxy, fitins in instructions}
        outcome = self.secure.run(grid, current_round, train, LEGACY_LAYOUT, LEGACY_WEIGHT_KEY)
        if outcome is None:
            log.info("Secure aggregation halted.")
            return
        average = outcome.average
        fitres = FitRes(Status(Code.OK, "securefl average"), average.parameters(),
                        max(1, round(average.total_weight / average.contributors)), average.metrics())
        results = [(proxies[node], fitres) for node in outcome.nodes]
        failures = [RuntimeError(f"node {node} did not contribute") for node in set(proxies) - set(outcome.nodes)]
        aggregated, metrics = context.strategy.aggregate_fit(current_round, results, failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)
