"""Service logs: plain text lines (the default) or JSON lines (`--log-format json`), to stderr.

Security: a log record never carries a key, a passphrase, a ciphertext or an update. The code
logs ids, counts, sizes, durations and error messages only, and a filter on the handler is the
second line: any bytes, array or key object given as a log argument is replaced by its type and
size before formatting, so a careless `log.debug("%s", chunk)` cannot write data out."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _placeholder(value: Any) -> Any:
    """What a log shows of an argument: data and key objects become their type and size."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    kind = type(value)
    if kind.__module__.startswith(("numpy", "torch", "tenseal")) and hasattr(value, "shape"):
        return f"<{kind.__name__} {tuple(value.shape)}>"
    if kind.__module__.startswith("cryptography") or "PrivateKey" in kind.__name__:
        return f"<{kind.__name__}>"
    return value


class RedactData(logging.Filter):
    """Replace data-bearing log arguments (see the module docstring) before formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = {key: _placeholder(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_placeholder(value) for value in record.args)
        record.msg = _placeholder(record.msg)
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, any `extra`
    fields, and the exception (type and traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info", log_format: str = "text") -> None:
    """Send every log record of this process to stderr, at `level` and up, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactData())
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
