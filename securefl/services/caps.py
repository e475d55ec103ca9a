"""Per-caller caps on concurrent long calls, a transport limit: each call holds a server thread
while it waits or streams, so one enrolled party opening many (30 `AwaitResult` calls, say) could
leave none for the others. A caller at its cap gets RESOURCE_EXHAUSTED at once, and the server's
thread pool is sized so that every party at its caps still leaves threads for short calls."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

from ..errors import LimitExceeded


class CallCaps:
    def __init__(self, limit: int, what: str) -> None:
        """At most `limit` concurrent calls of kind `what` (in messages) per caller."""
        self.limit = limit
        self._what = what
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        with self._lock:
            if self._held[caller] >= self.limit:
                raise LimitExceeded(f"{caller} already has {self.limit} {self._what} under way, the most one party "
                                    "may; wait for one to finish")
            self._held[caller] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[caller] -= 1
                if not self._held[caller]:
                    del self._held[caller]
