"""Named pause points, so crash tests can `kill -9` a real process at an exact step.

A test starts a service with `SECUREFL_PAUSE_AT=NAME` (or `NAME#N`: the N-th time the point is
reached) and `SECUREFL_PAUSE_FILE=PATH`. When the process reaches that point it writes PATH
and stops itself with SIGSTOP; the test sees the file and sends SIGKILL, which is exactly a
crash at that line. Unarmed, a pause point is one dictionary lookup: the environment is read
once, at import."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

PAUSE_AT_ENV = "SECUREFL_PAUSE_AT"
PAUSE_FILE_ENV = "SECUREFL_PAUSE_FILE"


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(PAUSE_AT_ENV, "")
    if not spec:
        return None
    name, _, nth = spec.partition("#")
    return name, int(nth or 1)


_ARMED = _armed()
_counts: dict[str, int] = {}
_lock = threading.Lock()


def pause_point(name: str) -> None:
    """Stop this process here if a test armed `name` (see the module docstring)."""
    if _ARMED is None or _ARMED[0] != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] != _ARMED[1]:
            return
        marker = os.environ.get(PAUSE_FILE_ENV)
        if marker:
            Path(marker).write_text(name)
        os.kill(os.getpid(), signal.SIGSTOP)  # the test kills us here; holding the lock keeps others out
