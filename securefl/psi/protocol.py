"""ECDH-PSI over ristretto255 between a serving party A and a joining party B.

    B → A   H(y)^b for each of B's IDs, in B's order
    A → B   (H(y)^b)^a, same order            (cardinality mode: shuffled)
    A → B   H(x)^a for each of A's IDs, in a random order
    B       computes (H(x)^a)^b and matches; the intersection is ordered by the doubly blinded
            value H(·)^{ab}, which both parties can compute for matched items
    B → A   the positions of the matches in A's shuffled list, in that order

What each party learns (semi-honest model): both learn both set sizes; both learn the
intersection, as row indices into their own table, in the same order. Neither learns anything
about the other's non-matching IDs: they see only blinded points under a secret exponent
that is fresh per session, and points are hashed with a per-session domain tag, so nothing
links sessions. A's shuffle hides its row order from B. In cardinality mode A also shuffles
B's doubly blinded points and B reports only a count: both learn just the intersection size.
Against a malicious party, B could misreport matches to A; the protocol does not prevent that."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, PayloadTooLarge, UnknownSession
from .group import POINT_BYTES, GroupPool, batched, blind, hash_and_blind, new_scalar, point_batches
from .hashing import session_dst

MAX_SET_SIZE = 100_000_000


@dataclass
class PsiOutcome:
    """One party's result: row indices into its own table, in the agreed order."""

    indices: list[int]
    cardinality: int
    peer_size: int
    bytes_sent: int = 0
    bytes_received: int = 0


def random_permutation(n: int) -> np.ndarray:
    """A permutation drawn from os.urandom (sorting 64-bit random keys), vectorised."""
    return np.argsort(np.frombuffer(os.urandom(8 * n), dtype=np.uint64), kind="stable")


@dataclass
class ServerSession:
    session_id: bytes
    joiner_size: int
    cardinality_only: bool
    scalar: bytes = field(default_factory=new_scalar, repr=False)
    permutation: np.ndarray | None = None

    @property
    def dst(self) -> bytes:
        return session_dst(self.session_id)


class ServerParty:
    """Party A's state: its IDs and the sessions under way. Thread-safe."""

    def __init__(self, ids: list[bytes], pool: GroupPool) -> None:
        self.ids = ids
        self.pool = pool
        self._sessions: dict[bytes, ServerSession] = {}
        self._lock = threading.Lock()

    def start(self, joiner_size: int, cardinality_only: bool) -> ServerSession:
        if not 0 < joiner_size <= MAX_SET_SIZE:
            raise PayloadTooLarge(f"joiner set size {joiner_size} is outside [1, {MAX_SET_SIZE}]")
        session = ServerSession(os.urandom(16), joiner_size, cardinality_only)
        session.permutation = random_permutation(len(self.ids))
        with self._lock:
            self._sessions[session.session_id] = session
        return session

    def session(self, session_id: bytes) -> ServerSession:
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None:
            raise UnknownSession("unknown or finished PSI session")
        return found

    def blind_joiner_points(self, session: ServerSession, batches: Iterator[bytes]) -> Iterator[bytes]:
        """Raise the joiner's points to a, checking the announced count."""
        received = 0

        def counted() -> Iterator[bytes]:
            nonlocal received
            for data in batches:
                received += len(data) // POINT_BYTES
                if received > session.joiner_size:
                    raise InvalidInput(f"joiner sent more than the {session.joiner_size} points it announced")
                yield data

        results = self.pool.ordered_map(blind, counted(), session.scalar)
        if session.cardinality_only:
            doubled = b"".join(results)
            points = np.frombuffer(doubled, dtype=f"S{POINT_BYTES}")[random_permutation(len(doubled) // POINT_BYTES)]
            results = iter(point_batches(points.tobytes()))
        yield from results
        if received != session.joiner_size:
            raise InvalidInput(f"joiner sent {received} points, not the {session.joiner_size} it announced")

    def own_points(self, session: ServerSession) -> Iterator[bytes]:
        """H(x)^a for A's IDs, in the session's random order."""
        shuffled = [self.ids[i] for i in session.permutation]
        return self.pool.ordered_map(hash_and_blind, batched(shuffled), session.dst, session.scalar)

    def finish(self, session: ServerSession, positions: list[int], cardinality: int) -> PsiOutcome:
        with self._lock:
            self._sessions.pop(session.session_id, None)
        if session.cardinality_only:
            if positions or cardinality > min(len(self.ids), session.joiner_size):
                raise InvalidInput("a cardinality session reports only a plausible count")
            return PsiOutcome([], cardinality, session.joiner_size)
        array = np.asarray(positions, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() >= len(self.ids) or np.unique(array).size != array.size):
            raise InvalidInput("match positions must be distinct positions in the served list")
        indices = session.permutation[array].tolist() if array.size else []
        return PsiOutcome(indices, len(indices), session.joiner_size)

