"""The SecAgg+ security policy a site pins at enrolment, and the checks that hold the untrusted
aggregator to it.

Everything that decides how much a round protects comes from the pinned policy and the pinned
roster, never from the aggregator: the fixed-point encoding (value bound, maximum weight and,
from the enrolled count, the bit width and resolution), the graph's dropout and corrupt
fractions, the threshold rule and the minimum number of participants. The aggregator announces
its own parameters in `SecAggConfig` and `Participants`; a client takes part only if they are
at least as strong as its pins:

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
from dataclasses import dataclass

from ..errors import InvalidInput, VerificationFailed
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


@dataclass(frozen=True)
class SecAggPolicy:
    """What a site pins about SecAgg+ rounds (the enrolment's security section)."""

    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.1
    value_bound: float = 10.0
    max_weight: float = 1000.0
    min_participants: int = 3

    def __post_init__(self) -> None:
        check_fractions(self.dropout_fraction, self.corrupt_fraction)
        if self.min_participants < 2:
            raise InvalidInput("secure aggregation needs at least two participants")

    def encoding(self, enrolled: int) -> FixedPoint:
        """The fixed-point encoding every client of a federation of `enrolled` sites uses."""
        return FixedPoint.for_round(max(enrolled, 1), self.value_bound, self.max_weight)

    def config(self, enrolled: int) -> secagg_pb2.SecAggConfig:
        """The public parameters of an aggregator that runs exactly this policy."""
        encoding = self.encoding(enrolled)
        return secagg_pb2.SecAggConfig(
            value_bound=self.value_bound, max_weight=self.max_weight, bits=encoding.bits,
            frac_bits=encoding.frac_bits, dropout_fraction=self.dropout_fraction,
            corrupt_fraction=self.corrupt_fraction, min_participants=self.min_participants,
        )

    def check_config(self, config: secagg_pb2.SecAggConfig, enrolled: int) -> None:
        """Raise VerificationFailed unless the aggregator's parameters are at least as strong
        as this policy for a federation of `enrolled` sites."""
        expected = self.config(enrolled)
        encoding = ("value_bound", "max_weight", "bits", "frac_bits")
        differ = [name for name in encoding if getattr(config, name) != getattr(expected, name)]
        if differ:
            raise VerificationFailed(f"the aggregator's encoding ({', '.join(differ)}) differs from this site's pinned "
                                     "SecAgg+ policy")
        if config.corrupt_fraction < self.corrupt_fraction:
            raise VerificationFailed(f"the aggregator's corrupt fraction {config.corrupt_fraction:g} is below the "
                                     f"pinned {self.corrupt_fraction:g}")
        if config.min_participants < self.min_participants:
            raise VerificationFailed(f"the aggregator accepts rounds of {config.min_participants} participants; "
                                     f"this site's policy needs at least {self.min_participants}")
        try:
            check_fractions(config.dropout_fraction, config.corrupt_fraction)
        except InvalidInput as exc:
            raise VerificationFailed(f"the aggregator's graph fractions are invalid: {exc}") from None

    def check_graph(self, n: int, degree: int, threshold: int) -> None:
        """Raise VerificationFailed unless (k, t) offered for n participants is at least as
        strong as what this policy gives."""
        if n < self.min_participants:
            raise VerificationFailed(f"only {n} participants; this site's policy needs at least {self.min_participants}")
        _, pinned_threshold = choose_params(n, self.dropout_fraction, self.corrupt_fraction)
        if threshold < pinned_threshold or not is_secure(n, degree, threshold, self.corrupt_fraction):
            raise VerificationFailed(
                f"the aggregator's neighbour graph (k = {degree}, t = {threshold}) for {n} participants is weaker than "
                f"this site's pinned policy (t >= {pinned_threshold}, a majority of k, security bound at corrupt "
                f"fraction {self.corrupt_fraction:g})"
            )
