"""Private set intersection for vertical federated learning (ECDH over ristretto255): the
protocol core, free of any transport.

    from securefl.simulation import local_psi
    indices_a, indices_b = local_psi(ids_a, ids_b)
    # row indices_a[i] of A's table and row indices_b[i] of B's table are the same entity

`securefl psi serve` / `securefl psi join` run the two parties on different machines over
mutual TLS (securefl.services.psi). See securefl.psi.protocol for exactly what each party
learns and what a malicious peer can do."""

from __future__ import annotations

from .group import GroupPool
from .ids import encode_ids, read_ids, write_indices
from .protocol import JoinerParty, PsiOutcome, ServerParty

__all__ = ["GroupPool", "JoinerParty", "PsiOutcome", "ServerParty", "encode_ids", "read_ids", "write_indices"]
