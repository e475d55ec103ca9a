"""The SecAgg+ parameters a site pins (the federation file's `security` section), and the checks
that hold the untrusted aggregator to them.

Everything that decides how much a round protects comes from the federation file, never from
the aggregator: the fixed-point encoding (value bound, maximum weight and, from the enrolled
count, the bit width and resolution), the graph's dropout and corrupt fractions, the threshold
rule and the minimum number of participants. The aggregator announces its own parameters in
`SecAggConfig` and `Participants`; a client takes part only if they are at least as strong:

* the encoding is identical (every client must encode alike for the sum to mean anything);
* the corrupt fraction is at least the pinned one, and the minimum number of participants
  at least the pinned minimum;
* the graph (k, t) offered for n participants is a valid k-regular graph whose threshold is a
  strict majority of the neighbours, meets the security bound at the pinned corrupt fraction
  (`graph.is_secure`), and is at least the t the pinned rule gives for n. A denser graph or a
  higher threshold is accepted; a corrupt fraction of 0 (k = 2, t = 2) is not.

The confirmation quorum (`confirmation_quorum`) is the other half of the threshold rule: how
many participants must sign the survivor set before any client reveals a share."""

from __future__ import annotations

import math

from ..errors import InvalidInput, VerificationFailed
from ..federation import SecurityParameters
from ..quantize import FixedPoint
from ..v1 import secagg_pb2
from .graph import check_fractions, choose_params, is_secure


def tolerated_colluders(n: int, threshold: int, corrupt_fraction: float) -> int:
    """How many colluding participants a round of n with threshold t is built to withstand:
    t - 1 whatever the graph (the worst case), and at least the corrupt fraction of n (the
    statistical case of Bell et al.)."""
    return max(threshold - 1, math.ceil(corrupt_fraction * n))


def confirmation_quorum(n: int, threshold: int, corrupt_fraction: float) -> int:
    """Signatures on one survivor set, out of the n participants, that a client needs before it
    reveals anything. Any two quorums share more than `tolerated_colluders` signers, so at most
    one survivor set per round can reach a quorum unless an honest client signed two sets, which
    it never does."""
    return (n + tolerated_colluders(n, threshold, corrupt_fraction)) // 2 + 1


def secagg_config(security: SecurityParameters, enrolled: int, min_participants: int = 0) -> secagg_pb2.SecAggConfig:
    """The public parameters of a federation of `enrolled` sites with these security parameters
    (an aggregator may ask for more participants than the federation's minimum)."""
    encoding = FixedPoint.for_round(max(enrolled, 1), security.value_bound, security.max_weight)
    check_fractions(security.dropout_fraction, security.corrupt_fraction)
    return secagg_pb2.SecAggConfig(
        value_bound=security.value_bound, max_weight=security.max_weight, bits=encoding.bits,
        frac_bits=encoding.frac_bits, dropout_fraction=security.dropout_fraction,
        corrupt_fraction=security.corrupt_fraction,
        min_participants=max(2, security.min_participants, min_participants),
    )


def check_config(security: SecurityParameters, config: secagg_pb2.SecAggConfig, enrolled: int) -> None:
    """Raise VerificationFailed unless the aggregator's parameters are at least as strong as the
    pinned ones for a federation of `enrolled` sites."""
    expected = secagg_config(security, enrolled)
    encoding = ("value_bound", "max_weight", "bits", "frac_bits")
    differ = [name for name in encoding if getattr(config, name) != getattr(expected, name)]
    if differ:
        raise VerificationFailed(f"the aggregator's encoding ({', '.join(differ)}) differs from this site's "
                                 "federation file")
    if config.corrupt_fraction < security.corrupt_fraction:
        raise VerificationFailed(f"the aggregator's corrupt fraction {config.corrupt_fraction:g} is below the "
                                 f"pinned {security.corrupt_fraction:g}")
    if config.min_participants < expected.min_participants:
        raise VerificationFailed(f"the aggregator accepts rounds of {config.min_participants} participants; "
                                 f"this site's federation file needs at least {expected.min_participants}")
    try:
        check_fractions(config.dropout_fraction, config.corrupt_fraction)
    except InvalidInput as exc:
        raise VerificationFailed(f"the aggregator's graph fractions are invalid: {exc}") from None


def check_graph(security: SecurityParameters, n: int, degree: int, threshold: int) -> None:
    """Raise VerificationFailed unless (k, t) offered for n participants is at least as strong
    as what the pinned parameters give."""
    if n < security.min_participants:
        raise VerificationFailed(f"only {n} participants; this site's federation file needs at least "
                                 f"{security.min_participants}")
    _, pinned_threshold = choose_params(n, security.dropout_fraction, security.corrupt_fraction)
    if threshold < pinned_threshold or not is_secure(n, degree, threshold, security.corrupt_fraction):
        raise VerificationFailed(
            f"the aggregator's neighbour graph (k = {degree}, t = {threshold}) for {n} participants is weaker than "
            f"this site's federation file allows (t >= {pinned_threshold}, a majority of k, security bound at "
            f"corrupt fraction {security.corrupt_fraction:g})"
        )
