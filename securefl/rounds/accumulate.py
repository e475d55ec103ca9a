"""A running sum of chunked submissions that several threads add to at once.

The chunks of the sum are split into stripes, each with its own lock. An adder walks the
stripes starting from a different one than the previous adder, so concurrent submissions add
into different stripes in parallel: numpy releases the GIL inside the add, so plain and masked
sums add at memory speed on every core. (TenSEAL holds the GIL: CKKS adds are serial, but still
never wait on a disk write or a validation.) Memory is one sum, whatever the number of clients.

A scheme supplies how to take ownership of a first chunk, how to add one chunk into another in
place, and how to write and read a chunk for checkpoints."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STRIPES = 8


@dataclass(frozen=True)
class ChunkOps:
    own: Callable[[Any], Any]             # the first chunk becomes the sum's (a copy if it is read-only)
    add: Callable[[Any, Any], None]       # add the second into the first, in place
    serialize: Callable[[Any], bytes]
    parse: Callable[[bytes], Any]


def array_ops(dtype: np.dtype) -> ChunkOps:
    """Chunks as little-endian numpy arrays of `dtype`; unsigned sums wrap modulo 2^bits."""
    wire = np.dtype(dtype).newbyteorder("<")

    def add(total: np.ndarray, chunk: np.ndarray) -> None:
        total += chunk

    return ChunkOps(own=lambda chunk: np.array(chunk, dtype=dtype), add=add,
                    serialize=lambda chunk: chunk.astype(wire, copy=False).tobytes(),
                    parse=lambda data: np.frombuffer(data, dtype=wire).astype(dtype))


class ChunkedSum:
    """Thread-safe `add`; `snapshot`, `restore` and reading the chunks need no concurrent adds
    (the round engine guarantees that)."""

    def __init__(self, ops: ChunkOps, stripes: int = STRIPES) -> None:
        self._ops = ops
        self._stripes = stripes
        self._locks = [threading.Lock() for _ in range(stripes)]
        self._start = itertools.count()
        self._allocate = threading.Lock()
        self._snapshot: list[bytes] | None = None
        self.chunks: list[Any] | None = None

    def add(self, submission: Sequence[Any]) -> None:
        """Add one whole, validated submission (its chunks in order) into the sum."""
        self._snapshot = None
        if self.chunks is None:
            with self._allocate:
                if self.chunks is None:
                    self.chunks = [None] * len(submission)
        assert len(submission) == len(self.chunks), "the engine admits only submissions of the round's length"
        first = next(self._start)
        for step in range(self._stripes):
            stripe = (first + step) % self._stripes
            with self._locks[stripe]:
                for index in range(stripe, len(submission), self._stripes):
                    total = self.chunks[index]
                    if total is None:
                        self.chunks[index] = self._ops.own(submission[index])
                    else:
                        self._ops.add(total, submission[index])

    def snapshot(self) -> list[bytes]:
        """The sum serialized; kept until the next add, since a round's close checkpoint and its
        reveal (the request to the key-holder) need the same bytes."""
        if self._snapshot is None:
            self._snapshot = [self._ops.serialize(chunk) for chunk in self.chunks or []]
        return self._snapshot

    def restore(self, chunks: Sequence[bytes]) -> None:
        self.chunks = [self._ops.parse(data) for data in chunks] or None
        self._snapshot = list(chunks)

    def concatenated(self) -> np.ndarray:
        """The whole sum as one array (numpy chunks only)."""
        assert self.chunks is not None
        return np.concatenate(self.chunks)
