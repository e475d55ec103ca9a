"""The round engine's limits, played by a misbehaving enrolled site against the engine itself
(no network; the same rules over real gRPC are in tests/test_service_limits.py): caps on open
rounds, one submission stream per site and round, eviction of finished rounds, random round
ids, and a draining engine that starts nothing new. Every refusal leaves the store as it was."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from securefl.errors import LimitExceeded, PermissionDenied, RoundClosed, RoundExists, ServiceUnavailable, UnknownRound
from securefl.identity import Identity, Roster
from securefl.rounds.engine import RoundEngine
from securefl.rounds.inprocess import SPEC_HASH, ManualClock
from securefl.rounds.limits import RoundLimits
from securefl.rounds.plain import PLAIN, PlainClient, PlainServer
from securefl.rounds.scheme import SUBMIT, RoundConfig, Stage, signed_receipt
from securefl.rounds.store import RoundStore

SITES = [Identity.generate(f"site-{i}") for i in range(1, 4)]
LIMITS = RoundLimits(max_open_rounds=6, max_open_rounds_per_site=2, retention_seconds=60.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock, tmp_path):
    engine = RoundEngine(PlainServer(), RoundStore(tmp_path / "rounds.db"), Roster.of(SITES), RoundConfig(2, 2),
                         clock=clock, watch=False, limits=LIMITS)
    yield engine
    engine.stop()


def submission(site: Identity, round_id: str, value: float = 1.0):
    protected = PlainClient().start(round_id, np.full(4, value), 1.0).protect(Stage(SUBMIT))
    receipt = signed_receipt(site, round_id, PLAIN, SPEC_HASH, protected)
    return receipt, len(protected.chunks), protected.chunks


def submit(engine: RoundEngine, site: Identity, round_id: str, value: float = 1.0):
    receipt, count, chunks = submission(site, round_id, value)
    return engine.submit(receipt, count, enumerate(chunks))


def stored_rounds(engine: RoundEngine) -> list[str]:
    return [record.round_id for record in engine.store.rounds()]


def test_a_site_cannot_open_more_rounds_than_its_cap_and_the_refusal_creates_nothing(engine):
    for round_id in ("mine-1", "mine-2"):
        engine.join("site-1", round_id)
    with pytest.raises(LimitExceeded, match="site-1 has opened 2 rounds"):
        engine.join("site-1", "mine-3")
    with pytest.raises(LimitExceeded, match="site-1 has opened 2 rounds"):
        submit(engine, SITES[0], "mine-4")  # refused before a chunk is read
    assert stored_rounds(engine) == ["mine-1", "mine-2"]
    engine.join("site-2", "theirs")  # other sites and the operator are not affected
    engine.open_round("operator-round", None)
    engine.join("site-1", "theirs")  # joining a round that exists opens nothing


def test_no_more_rounds_open_than_the_global_cap_not_even_the_operators(engine):
    for i in range(3):
        engine.join(f"site-{i + 1}", f"r{i}")
    for i in range(3):
        engine.open_round(f"op{i}", None)
    with pytest.raises(LimitExceeded, match="6 rounds are open"):
        engine.open_round("one-more", None)
    with pytest.raises(LimitExceeded, match="6 rounds are open"):
        engine.join("site-1", "seventh")
    assert len(stored_rounds(engine)) == 6


def test_ended_rounds_free_their_place_under_the_caps(engine):
    engine.join("site-1", "a")
    engine.join("site-1", "b")
    submit(engine, SITES[0], "a")
    submit(engine, SITES[1], "a")
    assert engine.wait(engine.get("a"), 10)
    engine.join("site-1", "c")


def test_round_ids_the_engine_picks_are_random(engine):
    first = engine.join("site-1").round_id
    submit(engine, SITES[0], first)
    second = engine.join("site-1").round_id  # site-1 already contributed to the first
    assert first != second
    for round_id in (first, second):
        assert round_id.startswith("round-") and len(round_id) == len("round-") + 16
    assert int(first[6:], 16) != int(second[6:], 16) - 1  # not a counter


def test_a_site_streams_one_submission_per_round_at_a_time(engine):
    """The second stream of the same site and round is refused before it is read, so a site
    cannot make the aggregator buffer its update several times; the first one still counts."""
    receipt, count, chunks = submission(SITES[0], "r1")
    release = threading.Event()

    def slow_chunks():
        release.wait(10)
        yield from enumerate(chunks)

    results = []
    first = threading.Thread(target=lambda: results.append(engine.submit(receipt, count, slow_chunks())))
    first.start()
    try:
        for _ in range(200):  # wait until the first stream holds its slot
            if engine._streams:
                break
            threading.Event().wait(0.01)
        with pytest.raises(LimitExceeded, match="already streaming a submission to round r1"):
            engine.submit(receipt, count, enumerate(chunks))
    finally:
        release.set()
        first.join(10)
    assert results and results[0][1] == 1
    assert not engine._streams


def test_finished_rounds_leave_memory_after_retention_and_are_read_back_from_the_store(engine, clock):
    engine.join("site-3", "done")  # joined, never contributed
    submit(engine, SITES[0], "done", 1.0)
    submit(engine, SITES[1], "done", 3.0)
    assert engine.wait(engine.get("done"), 10)
    clock.advance(59)
    engine.tick()
    assert "done" in engine._rounds
    clock.advance(1)
    engine.tick()
    assert "done" not in engine._rounds  # evicted
    late = engine.get("done")
    engine.check_contributor(late, "site-1")
    assert np.allclose(engine.result(late).average[:4], 2.0)
    with pytest.raises(PermissionDenied):
        engine.check_contributor(late, "site-3")
    with pytest.raises(RoundExists):
        engine.open_round("done", None)
    with pytest.raises(RoundClosed):
        submit(engine, SITES[2], "done")
    assert engine.join("site-3", "done").state == "complete"  # no new round under the old id


def test_a_restarted_engine_reads_finished_rounds_from_the_store_only(clock, tmp_path):
    store_path = tmp_path / "rounds.db"
    first = RoundEngine(PlainServer(), RoundStore(store_path), Roster.of(SITES), RoundConfig(2, 2), clock=clock,
                        watch=False, limits=LIMITS)
    submit(first, SITES[0], "before")
    submit(first, SITES[1], "before")
    assert first.wait(first.get("before"), 10)
    first.stop()
    first.store.close()
    second = RoundEngine(PlainServer(), RoundStore(store_path), Roster.of(SITES), RoundConfig(2, 2), clock=clock,
                         watch=False, limits=LIMITS)
    try:
        assert not second._rounds
        assert np.allclose(second.result(second.get("before")).average[:4], 1.0)
    finally:
        second.stop()


def test_a_draining_engine_opens_nothing_and_takes_no_new_submission(engine):
    engine.join("site-1", "open-before")
    engine.drain()
    with pytest.raises(ServiceUnavailable):
        engine.open_round("after", None)
    with pytest.raises(ServiceUnavailable):
        engine.join("site-2", "after")
    with pytest.raises(ServiceUnavailable):
        submit(engine, SITES[0], "open-before")
    assert engine.await_stage("open-before", "site-1", timeout=30) is None  # returns at once
    assert stored_rounds(engine) == ["open-before"]
    with pytest.raises(UnknownRound):
        engine.get("after")


def test_a_round_that_fills_while_draining_is_closed_by_the_next_start(clock, tmp_path):
    store_path = tmp_path / "rounds.db"
    engine = RoundEngine(PlainServer(), RoundStore(store_path), Roster.of(SITES), RoundConfig(2, 2), clock=clock,
                         watch=False, limits=LIMITS)
    submit(engine, SITES[0], "filling")
    receipt, count, chunks = submission(SITES[1], "filling", 3.0)
    release = threading.Event()

    def slow_chunks():
        release.wait(10)
        yield from enumerate(chunks)

    streaming = threading.Thread(target=engine.submit, args=(receipt, count, slow_chunks()))
    streaming.start()
    while not engine._streams:
        threading.Event().wait(0.01)
    engine.drain()
    release.set()
    streaming.join(10)  # a stream under way is still accepted...
    assert engine.get("filling").state == "open"  # ...but no reveal starts while draining
    assert engine.stop(5)
    engine.store.close()
    restarted = RoundEngine(PlainServer(), RoundStore(store_path), Roster.of(SITES), RoundConfig(2, 2), clock=clock,
                            watch=False, limits=LIMITS)
    try:
        assert restarted.wait(restarted.get("filling"), 10)
        assert np.allclose(restarted.result(restarted.get("filling")).average[:4], 2.0)
    finally:
        restarted.stop()
