"""`SecureFedAvg`: Flower's Message API FedAvg with securefl's secure aggregation.

    strategy = SecureFedAvg("secagg", federation="enrolment/federation.json", fraction_evaluate=0.5)
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)

It takes FedAvg's own arguments and returns FedAvg's `Result`. Sampling, the train messages'
content (global arrays and train config), evaluation and `evaluate_fn` are FedAvg's; the
training round itself is securefl's (`server.SecureRounds`): nodes running `securefl_mod`
protect their update, the ServerApp sees only protected bytes, and `aggregate_train` returns
the revealed weighted average of the arrays and of the numeric train metrics. A round that
fails (quorum not reached, reveal refused) leaves the global model unchanged, as a FedAvg
round without replies does."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from ...he.scheme import KeyHolderLink
from ...federation import Federation
from ...tls import TlsConfig
from .server import Outcome, SecureRounds
from .wire import MESSAGE_LAYOUT

log = logging.getLogger("flwr")


class SecureFedAvg(FedAvg):
    def __init__(self, scheme: str = "secagg", *, federation: Federation | str | Path,
                 keyholder: str | KeyHolderLink | None = None, tls: TlsConfig | None = None, insecure: bool = False,
                 min_clients: int | None = None, timeout: float = 600.0, **fedavg: object) -> None:
        """`scheme`: "secagg" (pairwise masking, no key-holder), "bfv", "ckks" or another securefl
        scheme; `federation`: the federation file the nodes pin (`securefl enrol`); `keyholder`
        (HE schemes): the key-holder's address, reached over mutual TLS with the aggregator's
        `tls` material; `min_clients`: the quorum below which nothing is revealed (default: the
        federation's `min_participants`); `timeout`: seconds a node has for each message of a
        round, training included, before it counts as dropped. Everything else goes to FedAvg."""
        super().__init__(**fedavg)  # type: ignore[arg-type]
        self.secure = SecureRounds(scheme, federation=federation, keyholder=keyholder, tls=tls, insecure=insecure,
                                   min_clients=min_clients, timeout=timeout)
        self._outcomes: dict[int, Outcome | None] = {}

    def summary(self) -> None:
        super().summary()
        log.info("\t└──> securefl: scheme %s, quorum %d, %d enrolled sites", self.secure.scheme,
                 self.secure.config.min_clients, len(self.secure.roster))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Run the whole secure round here, with FedAvg's sampled nodes and their train content,
        through messages of its own; Flower's loop then has nothing left to send."""
        train = {message.metadata.dst_node_id: message.content
                 for message in super().configure_train(server_round, arrays, config, grid)}
        if train:
            self._outcomes[server_round] = self.secure.run(grid, server_round, train, MESSAGE_LAYOUT,
                                                           self.weighted_by_key)
        return []

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        outcome = self._outcomes.pop(server_round, None)
        if outcome is None:
            return None, None
        return outcome.average.array_record(), outcome.average.metric_record()
