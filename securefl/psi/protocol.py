"""ECDH-PSI over ristretto255 between a serving party A and a joining party B.

    B       draws a fresh secret permutation of its rows
    B → A   H(y)^b for each of B's IDs, in that shuffled order
    A → B   (H(y)^b)^a, same order            (cardinality mode: in a fresh random order)
    A → B   H(x)^a for each of A's IDs, in a fresh random order
    B       computes (H(x)^a)^b and matches; the intersection is ordered by the doubly blinded
            value H(·)^{ab}, which both parties can compute for matched items; B maps its
            shuffled positions back to its own rows locally
    B → A   the positions of the matches in A's shuffled list, in that order

Both secrets a and b are fresh per session, and items are hashed to the group (RFC 9380) with a
per-session domain tag, so nothing links two sessions.

What each party learns, semi-honest peer: both set sizes; the intersection, as row indices into
its own table, in the same order; nothing about the other's non-matching IDs (blinded points
under an unknown exponent are pseudorandom under DDH). Neither learns the other's row order:
A's shuffle hides A's, and B's shuffle hides B's. The agreed order is the sort order of
H(·)^{ab}, a function of the items and the session's secrets only, so the positions B reports
to A carry nothing about B's rows. In cardinality mode A also shuffles B's doubly blinded points
and B reports only a count: both learn just the intersection size.

Malicious peer. A PSI result always tells each party which of *its own* items the peer also
holds, so a peer holding a dictionary of guesses learns which guesses the other party holds;
this is bounded by who may be the peer and by how many items it may bring:

* A serves only the peer it was told to expect: `ServerParty.authorize` runs first on every call,
  against the peer identity the transport authenticated, so an unexpected caller gets nothing
  and allocates nothing.
* Each party caps the other's announced set size (`max_peer_set`, default `PEER_SET_FACTOR`
  times its own) and refuses a larger one before any work or allocation; A checks that B sends
  exactly the points it announced, each a valid group element.
* A runs one session at a time, each step in order and once (B's points, then A's points, then
  Finish); a session expires after `session_timeout` and its memory is dropped; a step that
  fails midway ends the session, so B can never have more points blinded under one secret than
  it announced.
* A's output comes only from a Finish after both point exchanges completed. B may still lie in
  Finish (claim other matches or another order): A's output is then wrong, but B learns nothing
  more by it. A malicious A can likewise make B's output wrong."""

from __future__ import annotations

import enum
import functools
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInput, PayloadTooLarge, PeerRefused, SessionBusy, StepOutOfOrder, UnknownSession
from .group import POINT_BYTES, GroupPool, batched, blind, hash_and_blind, new_scalar, point_batches
from .hashing import session_dst

MAX_SET_SIZE = 100_000_000
PEER_SET_FACTOR = 2  # default cap of the peer's set: this many times one's own
DEFAULT_SESSION_TIMEOUT = 3600.0
SESSION_ID_BYTES = 16


def random_permutation(n: int) -> np.ndarray:
    """A permutation drawn from os.urandom (sorting 64-bit random keys), vectorised."""
    return np.argsort(np.frombuffer(os.urandom(8 * n), dtype=np.uint64), kind="stable")


@dataclass(frozen=True)
class Randomness:
    """Where a party's fresh secrets and shuffles come from. Production uses the defaults
    (libsodium's and the OS's CSPRNG); tests inject fixed values to compare views."""

    scalar: Callable[[], bytes] = new_scalar
    permutation: Callable[[int], np.ndarray] = random_permutation
    session_id: Callable[[], bytes] = functools.partial(os.urandom, SESSION_ID_BYTES)


SYSTEM_RANDOMNESS = Randomness()


def peer_set_limit(own_size: int, max_peer_set: int | None) -> int:
    """The largest peer set a party accepts: explicit, or PEER_SET_FACTOR times its own."""
    limit = PEER_SET_FACTOR * own_size if max_peer_set is None else max_peer_set
    if not 0 < limit <= MAX_SET_SIZE:
        raise InvalidInput(f"the peer set limit must be in [1, {MAX_SET_SIZE}], got {limit}")
    return limit


def check_peer_size(size: int, limit: int, who: str) -> None:
    if not 0 < size <= limit:
        raise PayloadTooLarge(f"{who} announced a set of {size} IDs; this party accepts 1 to {limit} "
                              "(raise it with --max-peer-set if that size is expected)")


@dataclass
class PsiOutcome:
    """One party's result: row indices into its own table, in the agreed order."""

    indices: list[int]
    cardinality: int
    peer_size: int
    bytes_sent: int = 0
    bytes_received: int = 0


class Step(enum.Enum):
    STARTED = "started"
    BLINDING_JOINER = "blinding the joiner's points"
    JOINER_BLINDED = "joiner's points blinded"
    SENDING_OWN = "sending own points"
    OWN_SENT = "own points sent"
    ENDED = "ended"


@dataclass(eq=False)
class ServerSession:
    session_id: bytes
    joiner_size: int
    cardinality_only: bool
    deadline: float
    scalar: bytes = field(repr=False)
    permutation: np.ndarray = field(repr=False)
    step: Step = Step.STARTED

    @property
    def dst(self) -> bytes:
        return session_dst(self.session_id)


class ServerParty:
    """Party A: its IDs, the one peer it serves, and at most one session at a time. Thread-safe."""

    def __init__(self, ids: list[bytes], pool: GroupPool, expected_peer: str, max_peer_set: int | None = None,
                 session_timeout: float = DEFAULT_SESSION_TIMEOUT, randomness: Randomness = SYSTEM_RANDOMNESS) -> None:
        if not expected_peer:
            raise InvalidInput("the serving party must be told which peer to expect")
        self.ids = ids
        self.pool = pool
        self.expected_peer = expected_peer
        self.max_peer_set = peer_set_limit(len(ids), max_peer_set)
        self.session_timeout = session_timeout
        self._random = randomness
        self._session: ServerSession | None = None
        self._expiry: threading.Timer | None = None
        self._lock = threading.Lock()

    def authorize(self, peer: str | None) -> None:
        """First check of every call: the transport-authenticated peer must be the expected one."""
        if peer is None:
            raise PeerRefused("the call carries no authenticated peer identity")
        if peer != self.expected_peer:
            raise PeerRefused(f"peer {peer!r} is not the peer this party serves")

    @property
    def live_session(self) -> ServerSession | None:
        with self._lock:
            return self._session

    def start(self, joiner_size: int, cardinality_only: bool) -> ServerSession:
        """Open the session; refused before any allocation if the joiner's set is too large or
        another session is live."""
        check_peer_size(joiner_size, self.max_peer_set, "the joining party")
        with self._lock:
            if self._session is not None:
                raise SessionBusy("a PSI session is already under way; retry when it finishes or expires")
            session = ServerSession(self._random.session_id(), joiner_size, cardinality_only,
                                    time.monotonic() + self.session_timeout, self._random.scalar(),
                                    self._random.permutation(len(self.ids)))
            self._session = session
            self._expiry = threading.Timer(self.session_timeout, self._end, args=(session,))
            self._expiry.daemon = True
            self._expiry.start()
        return session

    def session(self, session_id: bytes) -> ServerSession:
        with self._lock:
            found = self._session
        if found is None or not hmac.compare_digest(found.session_id, session_id):
            raise UnknownSession("unknown, finished or expired PSI session")
        return found

    def blind_joiner_points(self, session: ServerSession, batches: Iterator[bytes]) -> Iterator[bytes]:
        """Raise the joiner's points to a, checking each point and the announced count."""
        received = 0

        def counted() -> Iterator[bytes]:
            nonlocal received
            for data in batches:
                self._check_live(session)
                received += len(data) // POINT_BYTES
                if received > session.joiner_size:
                    raise InvalidInput(f"joiner sent more than the {session.joiner_size} points it announced")
                yield data

        def blinded() -> Iterator[bytes]:
            results = self.pool.ordered_map(blind, counted(), session.scalar)
            if session.cardinality_only:
                doubled = np.frombuffer(b"".join(results), dtype=f"S{POINT_BYTES}")
                results = point_batches(doubled[self._random.permutation(doubled.size)].tobytes())
            yield from results
            if received != session.joiner_size:
                raise InvalidInput(f"joiner sent {received} points, not the {session.joiner_size} it announced")

        return self._step(session, Step.STARTED, Step.BLINDING_JOINER, Step.JOINER_BLINDED, blinded())

    def own_points(self, session: ServerSession) -> Iterator[bytes]:
        """H(x)^a for A's IDs, in the session's random order."""
        shuffled = [self.ids[i] for i in session.permutation]
        points = self.pool.ordered_map(hash_and_blind, batched(shuffled), session.dst, session.scalar)
        return self._step(session, Step.JOINER_BLINDED, Step.SENDING_OWN, Step.OWN_SENT, points)

    def finish(self, session: ServerSession, positions: list[int], cardinality: int) -> PsiOutcome:
        """A's outcome, only after both point exchanges completed. Bad input leaves the session
        as it was; a valid Finish ends it."""
        with self._lock:
            self._require(session, Step.OWN_SENT)
            outcome = self._outcome(session, positions, cardinality)
            self._end_locked(session)
        return outcome

    def _outcome(self, session: ServerSession, positions: list[int], cardinality: int) -> PsiOutcome:
        if session.cardinality_only:
            if positions or cardinality > min(len(self.ids), session.joiner_size):
                raise InvalidInput("a cardinality session reports only a plausible count")
            return PsiOutcome([], cardinality, session.joiner_size)
        array = np.asarray(positions, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() >= len(self.ids) or np.unique(array).size != array.size):
            raise InvalidInput("match positions must be distinct positions in the served list")
        if cardinality != array.size:
            raise InvalidInput(f"Finish reports {cardinality} matches but lists {array.size} positions")
        return PsiOutcome(session.permutation[array].tolist(), int(array.size), session.joiner_size)

    def _step(self, session: ServerSession, before: Step, during: Step, after: Step, work: Iterator[bytes]) -> Iterator[bytes]:
        """Run one streamed step exactly once, in order. A step that does not complete (bad
        input, expiry, the peer hanging up) ends the session: the peer cannot retry with more
        points under the same secret."""
        with self._lock:
            self._require(session, before)
            session.step = during

        def guarded() -> Iterator[bytes]:
            completed = False
            try:
                for data in work:
                    self._check_live(session)
                    yield data
                completed = True
            finally:
                with self._lock:
                    if completed and session.step is during:
                        session.step = after
                    else:
                        self._end_locked(session)

        return guarded()

    def _require(self, session: ServerSession, step: Step) -> None:
        if self._session is not session or session.step is Step.ENDED:
            raise UnknownSession("unknown, finished or expired PSI session")
        if session.step is not step:
            raise StepOutOfOrder(f"the session is at step '{session.step.value}', not '{step.value}'")

    def _check_live(self, session: ServerSession) -> None:
        if time.monotonic() > session.deadline:
            self._end(session)
        if session.step is Step.ENDED:
            raise UnknownSession("the PSI session expired or ended")

    def _end(self, session: ServerSession) -> None:
        with self._lock:
            self._end_locked(session)

    def _end_locked(self, session: ServerSession) -> None:
        """Forget the session (its secret and permutation go with it) and free the slot."""
        session.step = Step.ENDED
        if self._session is session:
            self._session = None
            if self._expiry is not None:
                self._expiry.cancel()
                self._expiry = None


@dataclass
class JoinerResult:
    """What B computes at the end: its own rows and A's positions, in the agreed order."""

    own_indices: list[int]
    server_positions: list[int]
    cardinality: int


class JoinerSession:
    """Party B's side of one session: its secret b, its shuffle, and what A sent back."""

    def __init__(self, ids: list[bytes], pool: GroupPool, session_id: bytes, server_size: int,
                 max_peer_set: int, randomness: Randomness) -> None:
        if len(session_id) != SESSION_ID_BYTES:
            raise InvalidInput("the serving party announced an invalid session id")
        check_peer_size(server_size, max_peer_set, "the serving party")
        self.ids = ids
        self.pool = pool
        self.server_size = server_size
        self._dst = session_dst(session_id)
        self._scalar = randomness.scalar()
        self._order = randomness.permutation(len(ids))  # shuffled position -> own row; never sent
        self._own_doubled = b""
        self._server_positions: dict[bytes, int] = {}

    def blinded_points(self) -> Iterator[bytes]:
        """H(y)^b for B's IDs, in B's secret shuffled order."""
        shuffled = [self.ids[i] for i in self._order]
        return self.pool.ordered_map(hash_and_blind, batched(shuffled), self._dst, self._scalar)

    def accept_own_doubled(self, batches: Iterable[bytes]) -> None:
        """(H(y)^b)^a from A, in the order B sent them (or shuffled, in cardinality mode)."""
        data = b"".join(batches)
        if len(data) != POINT_BYTES * len(self.ids):
            raise InvalidInput(f"the serving party returned {len(data) / POINT_BYTES:g} points for {len(self.ids)}")
        self._own_doubled = data

    def accept_server_points(self, batches: Iterator[bytes]) -> None:
        """H(x)^a from A: each is validated and raised to b."""
        self._server_positions = _checked_count(self.pool.ordered_map(blind, batches, self._scalar), self.server_size)

    def result(self, cardinality_only: bool) -> JoinerResult:
        if cardinality_only:
            count = sum(self._own_doubled[o:o + POINT_BYTES] in self._server_positions
                        for o in range(0, len(self._own_doubled), POINT_BYTES))
            return JoinerResult([], [], count)
        shuffled_indices, server_positions = _match(self._own_doubled, self._server_positions)
        own_indices = self._order[np.asarray(shuffled_indices, dtype=np.int64)].tolist() if shuffled_indices else []
        return JoinerResult(own_indices, server_positions, len(own_indices))


class JoinerParty:
    """Party B: its IDs and the largest set it accepts from A."""

    def __init__(self, ids: list[bytes], pool: GroupPool, max_peer_set: int | None = None,
                 randomness: Randomness = SYSTEM_RANDOMNESS) -> None:
        self.ids = ids
        self.pool = pool
        self.max_peer_set = peer_set_limit(len(ids), max_peer_set)
        self._random = randomness

    def session(self, session_id: bytes, server_size: int) -> JoinerSession:
        return JoinerSession(self.ids, self.pool, session_id, server_size, self.max_peer_set, self._random)


def _checked_count(batches: Iterator[bytes], expected: int) -> dict[bytes, int]:
    """A's doubly blinded points -> their position; refuses a wrong count or duplicates."""
    positions: dict[bytes, int] = {}
    received = 0
    for data in batches:
        for offset in range(0, len(data), POINT_BYTES):
            positions[data[offset:offset + POINT_BYTES]] = received
            received += 1
            if received > expected:
                raise InvalidInput(f"the serving party sent more than the {expected} points it announced")
    if received != expected:
        raise InvalidInput(f"the serving party sent {received} points, not the {expected} it announced")
    if len(positions) != received:
        raise InvalidInput("the serving party sent the same point twice")
    return positions


def _match(own_doubled: bytes, server_positions: dict[bytes, int]) -> tuple[list[int], list[int]]:
    """B's (shuffled) indices and A's positions of the intersection, ordered by the doubly
    blinded value (which both parties can compute for a matched item)."""
    matches = sorted(
        (own_doubled[o:o + POINT_BYTES], o // POINT_BYTES)
        for o in range(0, len(own_doubled), POINT_BYTES)
        if own_doubled[o:o + POINT_BYTES] in server_positions
    )
    return [index for _, index in matches], [server_positions[point] for point, _ in matches]
