"""Reading and checking ID lists: one per line, or one column of a CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InvalidInput
from ..keyfiles import write_private


def encode_ids(ids: list[str] | list[bytes]) -> list[bytes]:
    """IDs as bytes, refusing an empty list and duplicates (which would make rows ambiguous)."""
    if not ids:
        raise InvalidInput("the ID list is empty")
    encoded = [i if isinstance(i, bytes) else str(i).encode("utf-8") for i in ids]
    if len(set(encoded)) != len(encoded):
        seen: set[bytes] = set()
        duplicate = next(x for x in encoded if x in seen or seen.add(x))
        raise InvalidInput(f"duplicate ID {duplicate[:60]!r}: every row must have a distinct ID")
    return encoded


def read_ids(path: Path, column: str | None = None) -> list[bytes]:
    """IDs from a text file (one per line, blank lines skipped) or a CSV column by header name."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path}: line {line} is not valid UTF-8") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if column is None:
        return encode_ids([line.strip() for line in text.splitlines() if line.strip()])
    rows = csv.DictReader(text.splitlines())
    if rows.fieldnames is None or column not in rows.fieldnames:
        raise InvalidInput(f"{path} has no column {column!r} (columns: {rows.fieldnames})")
    return encode_ids([row[column].strip() for row in rows])


def write_indices(path: Path, indices: list[int]) -> None:
    """A result: readable by its owner only, from creation."""
    write_private(path, "".join(f"{i}\n" for i in indices).encode(), replace=True)
