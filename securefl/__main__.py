"""`python -m securefl`: the CLI. A service started by LocalFederation asks (through
`SECUREFL_DIE_WITH_PARENT`) to get SIGTERM when the process that started it dies, so a crashed
test or demo leaves no stray servers behind. The child sets this itself: a `preexec_fn` would
make `subprocess` fork instead of vfork, and gRPC's fork handlers can hang a multi-threaded
parent in `fork()` (grpc/grpc#37259)."""

import os
import signal
import sys

DIE_WITH_PARENT_ENV = "SECUREFL_DIE_WITH_PARENT"


def _die_with_parent(parent: str | None) -> None:
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:  # the parent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    _die_with_parent(os.environ.pop(DIE_WITH_PARENT_ENV, None))
    from .cli import app

    app()
