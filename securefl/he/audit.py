"""The key-holder's audit log: one JSON object per line, appended and fsynced before the
decision takes effect for the caller, in a file that is 0600 from its creation.

Each entry: `at` (UTC, ISO 8601), `round`, `decision` ("released", "refused", "refused after
decryption"), `detail` (the reason; for a decryption, the key epoch and the receipts by client
and signature hash) and `requester` (the caller's certificate name and serial). Operators read
it with `tail -f` or `jq`; it holds no key material and no update, only decisions."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..keyfiles import create_private_file


class AuditFile:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        create_private_file(self.path)  # or check that an existing one is 0600
        self._lock = threading.Lock()

    def audit(self, round_id: str | None, decision: str, detail: str, requester: str = "") -> None:
        entry = {"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "round": round_id,
                 "decision": decision, "detail": detail, "requester": requester}
        line = (json.dumps(entry) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first."""
        with self._lock:
            return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
