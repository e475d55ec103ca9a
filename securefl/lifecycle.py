"""Service processes that die with the process that started them.

LocalFederation starts each service as `python -m securefl ...` and tells it its own pid in
SECUREFL_PARENT_PID. The child (not the parent) then asks Linux for SIGTERM when its parent
dies, first thing in `python -m securefl`, while it has a single thread, and exits at once if
the parent is already gone. The parent never runs code between fork and exec
(`subprocess.Popen(preexec_fn=...)`), which is unsafe in a process with gRPC threads: a child
forked mid-way through another thread's work once inherited a broken epoll descriptor."""

from __future__ import annotations

import os
import signal
import sys

PARENT_PID_ENV = "SECUREFL_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """If told a parent pid: SIGTERM when that parent dies (Linux); exit now if it already did.
    The variable is removed so that processes this one starts do not inherit it."""
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        raise SystemExit("securefl: the process that started this service has exited")
