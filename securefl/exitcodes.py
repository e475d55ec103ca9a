"""Exit codes of the `securefl` command, for a supervisor (documented in docs/operations.md).

| code | meaning | a supervisor should |
| --- | --- | --- |
| 0 | done; for a service: stopped by SIGTERM/SIGINT after draining | nothing |
| 1 | the command failed (a refused request, a failed round, an unexpected error) | alert, read the log |
| 2 | bad usage or configuration: a flag, a setting, a missing, unreadable or malformed file | not restart: fix it |
| 3 | a credential could not be opened or verified (wrong passphrase, corrupted key) | not restart: fix it |
| 4 | unavailable: a port could not be bound, a peer could not be reached | restart later |"""

from __future__ import annotations

from .errors import InvalidInput, SecureFLError, ServiceUnavailable, VerificationFailed

OK, FAILED, USAGE, CREDENTIALS, UNAVAILABLE = 0, 1, 2, 3, 4


def exit_code(error: SecureFLError) -> int:
    if isinstance(error, InvalidInput):
        return USAGE
    if isinstance(error, VerificationFailed):
        return CREDENTIALS
    if isinstance(error, ServiceUnavailable):
        return UNAVAILABLE
    return FAILED
