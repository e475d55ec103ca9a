"""One exception hierarchy. Each error maps to exactly one gRPC status code, and the
class name travels in trailing metadata so a client re-raises the same type."""

from __future__ import annotations

import grpc

ERROR_METADATA_KEY = "securefl-error"


class SecureFLError(Exception):
    """Base of every securefl error."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(SecureFLError):
    """A request is malformed: bad sizes, lengths, identifiers or encodings."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class MalformedCiphertext(InvalidInput):
    """Bytes that do not parse as a ciphertext (or masked chunk) of this round's parameters."""


class LengthMismatch(InvalidInput):
    """The submitted vector length differs from the round's."""


class PayloadTooLarge(SecureFLError):
    """A message or chunk exceeds the server's limit."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnknownClient(SecureFLError):
    """The client id is not enrolled."""

    status = grpc.StatusCode.PERMISSION_DENIED


class VerificationFailed(SecureFLError):
    """A signature, digest, fingerprint or decryption did not verify. One type for all, so
    failures are no oracle."""

    status = grpc.StatusCode.UNAUTHENTICATED


class PolicyViolation(SecureFLError):
    """The key-holder refused to decrypt: its policy does not hold."""

    status = grpc.StatusCode.PERMISSION_DENIED


class UnknownRound(SecureFLError):
    """No round with this id exists."""

    status = grpc.StatusCode.NOT_FOUND


class UnknownSession(SecureFLError):
    """No PSI session with this id is under way (never started, finished or expired)."""

    status = grpc.StatusCode.NOT_FOUND


class PeerRefused(SecureFLError):
    """The caller is not the authenticated peer this service was told to expect."""

    status = grpc.StatusCode.PERMISSION_DENIED


class SessionBusy(SecureFLError):
    """A PSI session is already under way; the service runs one at a time."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class StepOutOfOrder(SecureFLError):
    """A PSI session step was called before the steps it needs completed, or twice."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class RoundClosed(SecureFLError):
    """The round no longer accepts submissions (late or wrong round)."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class SpecMismatch(SecureFLError):
    """The model structure (or scheme) differs from the round's."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class DuplicateSubmission(SecureFLError):
    """This client already contributed to this round, or this round was already decrypted."""

    status = grpc.StatusCode.ALREADY_EXISTS


class QuorumTimeout(SecureFLError):
    """The round's deadline passed before `min_clients` contributions arrived."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED


class RoundFailed(SecureFLError):
    """The round was aborted after it closed (for example the key-holder refused)."""

    status = grpc.StatusCode.ABORTED


class ServiceUnavailable(SecureFLError):
    """A service could not be reached."""

    status = grpc.StatusCode.UNAVAILABLE


class RoundExists(SecureFLError):
    """A round with this id was already opened."""

    status = grpc.StatusCode.ALREADY_EXISTS


_BY_NAME: dict[str, type[SecureFLError]] = {
    cls.__name__: cls
    for cls in (
        SecureFLError, InvalidInput, MalformedCiphertext, LengthMismatch, PayloadTooLarge,
        UnknownClient, VerificationFailed, PolicyViolation, UnknownRound, RoundClosed,
        SpecMismatch, DuplicateSubmission, QuorumTimeout, RoundFailed, ServiceUnavailable, RoundExists,
        UnknownSession, PeerRefused, SessionBusy, StepOutOfOrder,
    )
}


def error_named(name: str | None, message: str, default: type[SecureFLError] = SecureFLError) -> SecureFLError:
    """Rebuild an error from its class name (stored with a failed round, or sent as metadata)."""
    return _BY_NAME.get(name or "", default)(message)


def from_rpc_error(error: grpc.RpcError) -> SecureFLError:
    """Rebuild the securefl error a server raised, from a failed call."""
    name = dict(error.trailing_metadata() or ()).get(ERROR_METADATA_KEY)
    default = ServiceUnavailable if error.code() == grpc.StatusCode.UNAVAILABLE else SecureFLError
    return error_named(name, error.details() or str(error.code()), default)

