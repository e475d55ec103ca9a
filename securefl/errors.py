"""One exception hierarchy for every layer. Each error names exactly one canonical status
(the code names gRPC and Google APIs share); transports map it to their own status and carry
the class name, so the other side re-raises the same type. No transport is imported here."""

from __future__ import annotations


class SecureFLError(Exception):
    """Base of every securefl error."""

    status: str = "INTERNAL"


class InvalidInput(SecureFLError):
    """A request is malformed: bad sizes, lengths, identifiers or encodings."""

    status = "INVALID_ARGUMENT"


class MalformedCiphertext(InvalidInput):
    """Bytes that do not parse as a ciphertext (or masked chunk) of this round's parameters."""


class LengthMismatch(InvalidInput):
    """The submitted vector length differs from the round's."""


class PayloadTooLarge(SecureFLError):
    """A message or chunk exceeds the server's limit."""

    status = "RESOURCE_EXHAUSTED"


class UnknownClient(SecureFLError):
    """The client id is not enrolled."""

    status = "PERMISSION_DENIED"


class VerificationFailed(SecureFLError):
    """A signature, digest, fingerprint or decryption did not verify. One type for all, so
    failures are no oracle."""

    status = "UNAUTHENTICATED"


class Unauthenticated(SecureFLError):
    """The caller presented no credential this service accepts (no client certificate, or one
    that names no securefl party)."""

    status = "UNAUTHENTICATED"


class PermissionDenied(SecureFLError):
    """An authenticated caller is not allowed to do this (wrong role, another party, revoked)."""

    status = "PERMISSION_DENIED"


class PolicyViolation(SecureFLError):
    """The key-holder refused to decrypt: its policy does not hold."""

    status = "PERMISSION_DENIED"


class UnknownRound(SecureFLError):
    """No round with this id exists."""

    status = "NOT_FOUND"


class UnknownSession(SecureFLError):
    """No PSI session with this id is under way (never started, finished or expired)."""

    status = "NOT_FOUND"


class PeerRefused(SecureFLError):
    """The caller is not the authenticated peer this service was told to expect."""

    status = "PERMISSION_DENIED"


class SessionBusy(SecureFLError):
    """A PSI session is already under way; the service runs one at a time."""

    status = "RESOURCE_EXHAUSTED"


class StepOutOfOrder(SecureFLError):
    """A PSI session step was called before the steps it needs completed, or twice."""

    status = "FAILED_PRECONDITION"


class RoundClosed(SecureFLError):
    """The round no longer accepts submissions (late or wrong round)."""

    status = "FAILED_PRECONDITION"


class SpecMismatch(SecureFLError):
    """The model structure (or scheme) differs from the round's."""

    status = "FAILED_PRECONDITION"


class DuplicateSubmission(SecureFLError):
    """This client already contributed to this round, or this round was already decrypted."""

    status = "ALREADY_EXISTS"


class QuorumTimeout(SecureFLError):
    """The round's deadline passed before `min_clients` contributions arrived."""

    status = "DEADLINE_EXCEEDED"


class RoundFailed(SecureFLError):
    """The round was aborted after it closed (for example the key-holder refused)."""

    status = "ABORTED"


class ProtocolViolation(RoundFailed):
    """The round was aborted because a client's own signed message proves it deviated from the
    protocol (for SecAgg+: a share that does not match its commitment); the message names it."""


class ServiceUnavailable(SecureFLError):
    """A service could not be reached."""

    status = "UNAVAILABLE"


class RoundExists(SecureFLError):
    """A round with this id was already opened."""

    status = "ALREADY_EXISTS"


class LimitExceeded(SecureFLError):
    """A caller reached one of the service's limits (open rounds, concurrent streams or waits);
    it may retry once it has fewer under way."""

    status = "RESOURCE_EXHAUSTED"


_BY_NAME: dict[str, type[SecureFLError]] = {
    cls.__name__: cls
    for cls in (
        SecureFLError, InvalidInput, MalformedCiphertext, LengthMismatch, PayloadTooLarge,
        UnknownClient, VerificationFailed, PolicyViolation, UnknownRound, RoundClosed,
        SpecMismatch, DuplicateSubmission, QuorumTimeout, RoundFailed, ProtocolViolation, ServiceUnavailable,
        RoundExists, UnknownSession, Unauthenticated, PermissionDenied, PeerRefused, SessionBusy, StepOutOfOrder,
        LimitExceeded,
    )
}


def error_named(name: str | None, message: str, default: type[SecureFLError] = SecureFLError) -> SecureFLError:
    """Rebuild an error from its class name (stored with a failed round, or sent as metadata)."""
    return _BY_NAME.get(name or "", default)(message)

