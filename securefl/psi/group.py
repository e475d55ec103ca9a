"""Batched ristretto255 operations in native code (libsodium via rbcl), spread over a thread
pool. Python only slices byte strings; every group operation is a libsodium call, and cffi
releases the GIL around it, so threads use every core (measured as fast as worker processes:
docs/decisions.md) without the multiprocessing constraints processes would put on callers.

Every point received from the peer is validated (canonical encoding of a non-identity group
element) before it is used."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import rbcl

from ..errors import InvalidInput
from .hashing import XmdExpander, hash_to_group, HASH_TO_GROUP_BYTES

POINT_BYTES = 32
BATCH_ITEMS = 4096


def new_scalar() -> bytes:
    """A fresh secret exponent from libsodium's CSPRNG, one per session."""
    return rbcl.crypto_core_ristretto255_scalar_random()


def hash_and_blind(items: list[bytes], dst: bytes, scalar: bytes) -> bytes:
    """H(x)^k for each item, concatenated."""
    expander = XmdExpander(dst, HASH_TO_GROUP_BYTES)
    return b"".join(rbcl.crypto_scalarmult_ristretto255(scalar, hash_to_group(x, expander)) for x in items)


def blind(points: bytes, scalar: bytes) -> bytes:
    """P^k for each received point, after checking it is a valid group element."""
    if len(points) % POINT_BYTES:
        raise InvalidInput(f"point batch of {len(points)} bytes is not a whole number of {POINT_BYTES}-byte points")
    out = []
    for offset in range(0, len(points), POINT_BYTES):
        point = points[offset:offset + POINT_BYTES]
        if not rbcl.crypto_core_ristretto255_is_valid_point(point):
            raise InvalidInput(f"point {offset // POINT_BYTES} of the batch is not a valid ristretto255 element")
        out.append(rbcl.crypto_scalarmult_ristretto255(scalar, point))
    return b"".join(out)


def split_points(data: bytes) -> list[bytes]:
    return [data[i:i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]


class GroupPool:
    """Runs batches on worker threads, keeping only a few batches in flight so memory stays
    bounded whatever the set size. `workers=0` runs inline (small sets, tests)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="psi-group") if self.workers else None

    def ordered_map(self, function: Callable[..., bytes], batches: Iterable, *args) -> Iterator[bytes]:
        """function(batch, *args) for each batch, results in input order."""
        if self._executor is None:
            for batch in batches:
                yield function(batch, *args)
            return
        in_flight: deque[Future] = deque()
        for batch in batches:
            in_flight.append(self._executor.submit(function, batch, *args))
            if len(in_flight) >= 2 * self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)

    def __enter__(self) -> GroupPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def batched(items: list, size: int = BATCH_ITEMS) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def point_batches(data: bytes, size: int = BATCH_ITEMS) -> Iterator[bytes]:
    step = size * POINT_BYTES
    for start in range(0, len(data), step):
        yield data[start:start + step]
