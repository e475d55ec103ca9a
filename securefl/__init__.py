"""securefl: secure aggregation for federated learning.

    import securefl
    client = securefl.connect("aggregator:7000", identity=securefl.Identity.load(path),
                              federation=securefl.Federation.load("federation.json"),
                              tls=securefl.TlsConfig.from_files(cert, key), keyholder_fingerprint=pin)
    averaged_state = client.aggregate(model.state_dict(), weight=n_samples)
"""

from .client import Client, RoundStats, connect
from .errors import (
    DuplicateSubmission, InvalidInput, LengthMismatch, LimitExceeded, MalformedCiphertext, PayloadTooLarge,
    PermissionDenied,
    PolicyViolation, ProtocolViolation, QuorumTimeout, RoundClosed, RoundExists, RoundFailed, SecureFLError,
    ServiceUnavailable, SpecMismatch, Unauthenticated, UnknownClient, UnknownRound, VerificationFailed,
)
from .federation import Federation, SecurityParameters
from .identity import Identity, Roster
from .tls import TlsConfig
from .schemes import CKKS, PLAIN, SCHEMES

__all__ = [
    "CKKS", "PLAIN", "SCHEMES", "Client", "RoundStats", "connect", "Identity", "Roster", "Federation",
    "SecurityParameters", "TlsConfig", "Unauthenticated", "PermissionDenied",
    "SecureFLError", "InvalidInput", "MalformedCiphertext", "LengthMismatch", "PayloadTooLarge", "UnknownClient",
    "VerificationFailed", "PolicyViolation", "UnknownRound", "RoundClosed", "RoundExists", "SpecMismatch",
    "DuplicateSubmission", "QuorumTimeout", "RoundFailed", "ProtocolViolation", "ServiceUnavailable", "LimitExceeded",
]
