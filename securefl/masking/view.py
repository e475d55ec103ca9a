"""One round's participant view: the advertised keys, the neighbour graph built over them, each
participant's Shamir evaluation point, and the thresholds that follow. The aggregator and each
client build it from the same public data, so they agree on it exactly when they were given
the same participant list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..v1 import secagg_pb2
from .graph import graph_seed, neighbours
from .policy import confirmation_quorum
from .statements import view_digest


@dataclass(frozen=True)
class RoundView:
    round_id: str
    adverts: dict[str, secagg_pb2.KeyAdvertisement]
    degree: int
    threshold: int
    corrupt_fraction: float
    digest: bytes = field(init=False)
    graph: dict[str, list[str]] = field(init=False)
    positions: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        ids = sorted(self.adverts)
        digest = view_digest(self.round_id, self.adverts.values())
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "graph", neighbours(ids, self.degree, graph_seed(digest)))
        object.__setattr__(self, "positions", {cid: i + 1 for i, cid in enumerate(ids)})

    @property
    def size(self) -> int:
        return len(self.adverts)

    @property
    def quorum(self) -> int:
        """Confirmations of one survivor set needed before anyone reveals a share."""
        return confirmation_quorum(self.size, self.threshold, self.corrupt_fraction)

    def neighbours_in(self, client_id: str, clients: Iterable[str]) -> set[str]:
        """The neighbours of `client_id` among `clients`."""
        return set(self.graph[client_id]).intersection(clients)

    def participants(self) -> secagg_pb2.Participants:
        return secagg_pb2.Participants(clients=[self.adverts[c] for c in sorted(self.adverts)], degree=self.degree,
                                       threshold=self.threshold)
