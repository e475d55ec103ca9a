"""Measuring a service process from outside (Linux /proc): its peak resident memory, the bytes
it writes to disk, and the rate at which it took the uploads of a round."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from ..client import RoundStats


class PeakMemory:
    """Samples a process's resident memory in the background; `peak_mb` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        try:
            for line in self._path.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._sample())


def disk_written(pid: int) -> int:
    """Bytes the process has caused to be written to storage so far (`write_bytes`)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


class DiskWrites:
    """`with DiskWrites(pid) as disk: ...`; then `disk.bytes` were written meanwhile."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.bytes = 0

    def __enter__(self) -> DiskWrites:
        self._start = disk_written(self._pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = disk_written(self._pid) - self._start


def ingest_mb_per_s(stats: Sequence[RoundStats]) -> float:
    """The uploads of one round over the time from the first upload's start to the last
    acknowledgement (MB = 10^6 bytes)."""
    uploads = [s for s in stats if s.upload_ended]
    window = max(s.upload_ended for s in uploads) - min(s.upload_began for s in uploads)
    return sum(s.bytes_sent for s in uploads) / window / 1e6
