"""The SecAgg+ neighbour graph (Bell et al., CCS 2020) and its parameters.

Each client shares its secrets with, and masks against, only its k neighbours in a random
k-regular graph instead of all n-1 other clients. Following Bell et al., k and the Shamir
threshold t are chosen from tail bounds so that, for every client:

* security: the chance that t or more of its k neighbours are corrupt (fraction γ) is below
  2^-σ / n (σ = 40), so colluding clients cannot rebuild its secrets without the honest
  clients' help, and honest clients never reveal both secrets of anyone;
* correctness: the chance that more than k - t of its neighbours drop out (fraction δ) is
  below 2^-η / n (η = 20), so the aggregator can still unmask.

t is also a strict majority of the neighbours, so no two disjoint groups can each rebuild a
secret. When the smallest such k is n - 1 or more the graph is complete: classic SecAgg.

The graph is a circulant (Harary) graph over an order of the participants drawn from a seed
hashed from the round's participant view (round id, every participant's id and fresh round
keys), so every party computes the same graph from public data, and nobody can compute it
before all participants have advertised their keys for this round."""

from __future__ import annotations

import functools
import hashlib
import math

from ..errors import InvalidInput

SECURITY_BITS, CORRECTNESS_BITS = 40, 20


def _tail_at_least(k: int, p: float, t: int) -> float:
    """P[Binomial(k, p) >= t]."""
    return sum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t, k + 1))


def check_fractions(dropout_fraction: float, corrupt_fraction: float) -> None:
    if not (0 <= dropout_fraction < 0.5 and 0 <= corrupt_fraction < 0.5):
        raise InvalidInput("dropout and corruption fractions must each be in [0, 0.5)")


def is_secure(n: int, degree: int, threshold: int, corrupt_fraction: float) -> bool:
    """Whether (k, t) is a valid graph for n participants whose threshold is a strict majority
    of the neighbours and meets the security bound for the corrupt fraction."""
    complete = degree == n - 1
    if not (complete or (2 <= degree < n - 1 and degree % 2 == 0)):
        return False
    if not degree // 2 < threshold <= degree:
        return False
    return complete or _tail_at_least(degree, corrupt_fraction, threshold) <= 2.0**-SECURITY_BITS / n


@functools.lru_cache(maxsize=256)
def choose_params(n: int, dropout_fraction: float, corrupt_fraction: float) -> tuple[int, int]:
    """(k, t) for n participants; k = n - 1 means the complete graph. Cached: every client
    checks the aggregator's graph against it, and the search evaluates binomial tails."""
    if n < 2:
        raise InvalidInput("secure aggregation needs at least two participants")
    check_fractions(dropout_fraction, corrupt_fraction)
    correctness = 2.0**-CORRECTNESS_BITS / n
    for k in range(2, n - 1, 2):
        for t in range(k // 2 + 1, k + 1):
            if is_secure(n, k, t, corrupt_fraction) and _tail_at_least(k, dropout_fraction, k - t + 1) <= correctness:
                return k, t
    k = n - 1
    return k, k // 2 + 1


def neighbours(participants: list[str], degree: int, seed: bytes) -> dict[str, list[str]]:
    """Each participant's k neighbours (all others when k >= n - 1)."""
    order = sorted(participants, key=lambda cid: hashlib.sha256(seed + cid.encode()).digest())
    n = len(order)
    if degree >= n - 1:
        return {cid: [o for o in order if o != cid] for cid in order}
    if degree % 2:
        raise InvalidInput("a sparse neighbour graph needs an even degree")
    half = degree // 2
    return {
        cid: [order[(i + step) % n] for step in range(-half, half + 1) if step]
        for i, cid in enumerate(order)
    }


def graph_seed(view_digest: bytes) -> bytes:
    """The graph's seed, from the digest of the round's participant view."""
    return hashlib.sha256(b"securefl/secagg/graph/v2" + view_digest).digest()
