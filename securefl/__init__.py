"""securefl: secure aggregation for federated learning.

    import securefl
    client = securefl.connect("aggregator:7000", identity=securefl.Identity.load(path),
                              keyholder_fingerprint=pin)
    averaged_state = client.aggregate(model.state_dict(), weight=n_samples)
"""

from .client import Client, RoundStats, connect
from .errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, MalformedCiphertext, PayloadTooLarge, PolicyViolation,
    ProtocolViolation, QuorumTimeout, RoundClosed, RoundExists, RoundFailed, SecureFLError, ServiceUnavailable, SpecMismatch,
    UnknownClient, UnknownRound, VerificationFailed,
)
from .identity import Identity, Roster
from .masking.policy import SecAggPolicy
from .schemes import CKKS, PLAIN, SCHEMES

__all__ = [
    "CKKS", "PLAIN", "SCHEMES", "Client", "RoundStats", "connect", "Identity", "Roster", "SecAggPolicy",
    "SecureFLError", "InvalidInput", "MalformedCiphertext", "LengthMismatch", "PayloadTooLarge", "UnknownClient",
    "VerificationFailed", "PolicyViolation", "UnknownRound", "RoundClosed", "RoundExists", "SpecMismatch",
    "DuplicateSubmission", "QuorumTimeout", "RoundFailed", "ProtocolViolation", "ServiceUnavailable",
]
