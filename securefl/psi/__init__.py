"""Private set intersection for vertical federated learning (ECDH over ristretto255).

    indices_a, indices_b = securefl.psi.run_local(ids_a, ids_b)
    # row indices_a[i] of A's table and row indices_b[i] of B's table are the same entity

See securefl.psi.protocol for exactly what each party learns."""

from __future__ import annotations

from collections.abc import Sequence

from ..enrolment import ephemeral_credentials
from ..pki import SITE, PartyName
from ..services.rpc import start_server
from .group import GroupPool
from .ids import encode_ids
from .protocol import PsiOutcome, ServerParty
from .service import PsiService, join

__all__ = ["run_local", "intersection_size_local", "PsiOutcome"]


def _run_local(ids_a: Sequence, ids_b: Sequence, cardinality_only: bool, workers: int | None) -> tuple[PsiOutcome, PsiOutcome]:
    """Both parties in this process, talking gRPC over a localhost socket, with mutual TLS
    under a throwaway CA (the deployed path)."""
    encoded_a, encoded_b = encode_ids(list(ids_a)), encode_ids(list(ids_b))
    party_a, party_b = PartyName(SITE, "party-a"), PartyName(SITE, "party-b")
    tls_a, tls_b = ephemeral_credentials(party_a, party_b)
    outcomes: list[PsiOutcome] = []
    with GroupPool(workers) as pool:
        service = PsiService(ServerParty(encoded_a, pool), on_finish=outcomes.append, peer=party_b.party_id)
        server, port = start_server(service.register, "127.0.0.1", 0, workers=4, tls=tls_a)
        try:
            outcome_b = join(f"127.0.0.1:{port}", encoded_b, pool, cardinality_only=cardinality_only, tls=tls_b,
                             server=party_a)
        finally:
            server.stop(0)
    return outcomes[0], outcome_b


def run_local(ids_a: Sequence, ids_b: Sequence, workers: int | None = None) -> tuple[list[int], list[int]]:
    """Align two ID lists: returns (indices_a, indices_b) of the intersection, in the same order."""
    outcome_a, outcome_b = _run_local(ids_a, ids_b, False, workers)
    return outcome_a.indices, outcome_b.indices


def intersection_size_local(ids_a: Sequence, ids_b: Sequence, workers: int | None = None) -> int:
    """Only the size of the intersection (cardinality mode)."""
    outcome_a, outcome_b = _run_local(ids_a, ids_b, True, workers)
    assert outcome_a.cardinality == outcome_b.cardinality
    return outcome_b.cardinality
