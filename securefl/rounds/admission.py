"""Admission control: the aggregator holds at most a fixed budget of submissions in memory.

Each submission reserves the memory its validated chunks will occupy before a single chunk is
read. A stream that does not fit waits *without reading its request iterator*; gRPC's flow
control then stops the client from sending (the server keeps its stream window small, see
`services/launch.py`), so a thousand concurrent clients cost the budget plus a small window
each, not a thousand submissions. Waiters are served in arrival order, so a large submission
is not starved by small ones. A submission larger than the whole budget runs alone; one larger
than `hard_limit` is refused.

The default budget follows the model: eight submissions of the largest round shape the
aggregator knows (from the operator's config or an accepted submission), at least 64 MiB, at
most a quarter of the memory available at start-up. An operator sets it with
`--max-inflight-mb`, which is then also the hard limit."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ..errors import PayloadTooLarge, ServiceUnavailable

MIB = 1 << 20
AUTO_FLOOR = 64 * MIB
AUTO_SUBMISSIONS = 8
_POLL_SECONDS = 0.25


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux MemAvailable), or 4 GiB if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


class MemoryBudget:
    """Thread-safe byte budget with first-come-first-served waiting."""

    def __init__(self, limit: int | None = None, available: int | None = None,
                 on_idle: Callable[[], None] | None = None) -> None:
        """`limit`: the operator's budget in bytes; None sizes it from the model (see module).
        `on_idle` runs whenever the last held submission is released (e.g. to hand freed
        memory back to the operating system)."""
        self._configured = limit
        self._ceiling = (available if available is not None else available_memory()) // 4
        self._model_bytes = 0
        self._held = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()
        self._on_idle = on_idle

    @property
    def limit(self) -> int:
        if self._configured is not None:
            return self._configured
        return min(self._ceiling, max(AUTO_FLOOR, AUTO_SUBMISSIONS * self._model_bytes))

    @property
    def hard_limit(self) -> int:
        return self._configured if self._configured is not None else max(self._ceiling, AUTO_FLOOR)

    @property
    def held(self) -> int:
        return self._held

    def know_submission_size(self, size: int) -> None:
        """A round's shape is fixed: the automatic budget grows to hold several of its submissions."""
        with self._changed:
            self._model_bytes = max(self._model_bytes, size)
            self._changed.notify_all()

    def acquire(self, size: int, active: Callable[[], bool] = lambda: True) -> None:
        """Reserve `size` bytes, waiting in line while they do not fit. Raises PayloadTooLarge
        for a submission the aggregator will never hold, ServiceUnavailable if the caller goes
        away while waiting."""
        if size > self.hard_limit:
            raise PayloadTooLarge(f"a submission of {size / MIB:.0f} MiB exceeds the aggregator's in-flight memory "
                                  f"limit of {self.hard_limit / MIB:.0f} MiB (--max-inflight-mb)")
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            try:
                while not (self._queue[0] is ticket and self._fits(size)):
                    if not active():
                        raise ServiceUnavailable("the client went away while its submission waited for memory")
                    self._changed.wait(_POLL_SECONDS)
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()
            self._held += size

    def _fits(self, size: int) -> bool:
        return self._held == 0 or self._held + size <= self.limit

    def release(self, size: int) -> None:
        with self._changed:
            self._held -= size
            idle = self._held == 0
            self._changed.notify_all()
        if idle and self._on_idle is not None:
            self._on_idle()
