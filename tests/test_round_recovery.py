"""The round engine across restarts, in process with a store on disk: the log and the
checkpoints bring a round back in the state it was in (SecAgg+ in any stage), acknowledged
submissions are neither lost nor counted twice, and a damaged store fails the round instead of
revealing a wrong sum. (The same over real processes and `kill -9`: test_crash_points.py.)"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from securefl.errors import DuplicateSubmission, InvalidInput, PayloadTooLarge, ServiceUnavailable
from securefl.identity import Identity
from securefl.masking.server import ADVERTISE, CONFIRM, MASK_SET, MASKED, SHARE, UNMASK
from securefl.rounds.accumulate import ChunkedSum, array_ops
from securefl.rounds.admission import MIB, MemoryBudget
from securefl.rounds.engine import FAILED
from securefl.rounds.inprocess import SPEC_HASH, InProcessFederation, ManualClock, Restart
from securefl.rounds.plain import PlainClient, PlainServer
from securefl.rounds.scheme import SUBMIT, RoundConfig, Stage, signed_receipt
from securefl.rounds.store import ANSWERED, Event, RoundRecord, RoundStore, _Log
from tests.secagg_rounds import Enrolment
from tests.test_masking import expected_average

N = 6


@pytest.fixture
def identities():
    return [Identity.generate(f"c{i:03d}") for i in range(N)]


def secagg_federation(store_path, **kwargs) -> InProcessFederation:
    enrolment = Enrolment(N)
    clients = {i.client_id: enrolment.client(i) for i in enrolment.identities}
    return InProcessFederation.start(enrolment.server, clients, enrolment.identities, RoundConfig(2, N),
                                     enrolment.clock, step_seconds=31, store_path=str(store_path), **kwargs)


def plain_federation(identities, store_path, config=RoundConfig(2, N), **kwargs) -> InProcessFederation:
    clients = {i.client_id: PlainClient() for i in identities}
    return InProcessFederation.start(PlainServer(), clients, identities, config, ManualClock(), step_seconds=31,
                                     store_path=str(store_path), **kwargs)


def grid_vectors(federation, rng, length=40) -> dict[str, np.ndarray]:
    """Updates on a coarse grid, so every sum is exact in both schemes' arithmetic."""
    return {cid: rng.integers(-2**9, 2**9, size=length) / 64.0 for cid in federation.identities}  # within value_bound


RESTARTS = [Restart(ADVERTISE, 2), Restart(SHARE, 0), Restart(SHARE, 4), Restart(MASK_SET, 2), Restart(MASKED, 0),
            Restart(MASKED, 3), Restart(CONFIRM, 1), Restart(UNMASK, 0), Restart(UNMASK, 2)]


@pytest.mark.parametrize("restart", RESTARTS, ids=[f"{r.stage}-after-{r.after}" for r in RESTARTS])
def test_secagg_round_restarted_in_any_stage_gives_the_exact_sum(tmp_path, rng, restart):
    federation = secagg_federation(tmp_path / "aggregator.db")
    vectors = grid_vectors(federation, rng)
    drops = {"c005": SHARE}  # a dropout too, so the restarted round also recovers pairwise masks
    result = federation.run("r1", vectors, {cid: 1.0 for cid in vectors}, drops, restart=restart)
    contributors = sorted(set(vectors) - set(drops))
    assert result.contributor_ids == contributors
    assert np.array_equal(result.average, expected_average(vectors, contributors, federation.server.result_dtype))


def test_secagg_stage_deadline_that_passed_while_down_counts_the_silent_as_dropped(tmp_path, rng):
    federation = secagg_federation(tmp_path / "aggregator.db")
    vectors = grid_vectors(federation, rng)
    engine = federation.engine
    engine.open_round("r1", None)
    for cid in vectors:
        engine.join(cid, "r1")
    jobs = {cid: federation.clients[cid].start("r1", vectors[cid], 1.0) for cid in vectors}
    for cid in list(jobs)[:4]:  # two clients have not advertised when the aggregator goes down
        engine.answer_stage("r1", cid, ADVERTISE, jobs[cid].answer(engine.await_stage("r1", cid, 0)))
    federation.clock.advance(60)  # down for longer than the stage's deadline
    federation.restart()
    federation.engine.tick()
    assert federation.engine.get("r1").scheme_round.stage == SHARE
    late = list(jobs)[4]
    with pytest.raises(Exception, match="dropped"):
        federation.engine.await_stage("r1", late, 0)


@pytest.mark.parametrize("checkpoint_seconds", [60.0, 0.0], ids=["owed-and-resent", "checkpointed-and-acknowledged-again"])
def test_plain_submissions_acknowledged_before_a_restart_are_counted_exactly_once(identities, tmp_path, rng,
                                                                                  checkpoint_seconds):
    federation = plain_federation(identities, tmp_path / "aggregator.db", checkpoint_seconds=checkpoint_seconds)
    vectors = grid_vectors(federation, rng)
    result = federation.run("r1", vectors, {cid: 1.0 for cid in vectors}, restart=Restart(SUBMIT, 3))
    assert result.contributor_ids == sorted(vectors)
    assert np.array_equal(result.average, expected_average(vectors, sorted(vectors), np.float32))


def submission(federation, client_id, vector, round_id="r1"):
    job = federation.clients[client_id].start(round_id, vector, 1.0)
    protected = job.protect(Stage(SUBMIT))
    receipt = signed_receipt(federation.identities[client_id], round_id, federation.server.name, SPEC_HASH, protected)
    return receipt, protected.chunks


def test_a_resent_submission_is_acknowledged_without_being_added_and_a_different_one_is_refused(identities, tmp_path):
    federation = plain_federation(identities, tmp_path / "aggregator.db")
    engine = federation.engine
    engine.open_round("r1", None)
    receipt, chunks = submission(federation, "c000", np.ones(10))
    assert engine.submit(receipt, len(chunks), enumerate(chunks))[1] == 1
    assert engine.submit(receipt, len(chunks), iter(()))[1] == 1  # acknowledged again, chunks not even read
    other, other_chunks = submission(federation, "c000", np.full(10, 2.0))
    with pytest.raises(DuplicateSubmission):
        engine.submit(other, len(other_chunks), enumerate(other_chunks))
    assert engine.get("r1").accumulator.concatenated()[0] == 1.0


def test_a_damaged_checkpoint_fails_the_round_instead_of_revealing_a_wrong_sum(identities, tmp_path, rng):
    store = tmp_path / "aggregator.db"
    federation = plain_federation(identities, store, checkpoint_seconds=0.0)
    federation.engine.open_round("r1", None)
    for cid in ("c000", "c001"):
        receipt, chunks = submission(federation, cid, rng.normal(size=10))
        federation.engine.submit(receipt, len(chunks), enumerate(chunks))
    federation.engine.stop()
    (checkpoint,) = (tmp_path / "aggregator.db-sums").glob("*.sum")
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 1
    checkpoint.write_bytes(bytes(data))
    federation.restart()
    round_ = federation.engine.get("r1")
    assert round_.state == FAILED and "corrupt" in round_.record.error_message


def test_owed_clients_that_never_resend_count_as_dropped_at_the_deadline(identities, tmp_path, rng):
    federation = plain_federation(identities, tmp_path / "aggregator.db", config=RoundConfig(2, 0, 100.0))
    engine = federation.engine
    engine.open_round("r1", None)
    sent = {cid: submission(federation, cid, rng.normal(size=10)) for cid in ("c000", "c001", "c002")}
    for receipt, chunks in sent.values():
        engine.submit(receipt, len(chunks), enumerate(chunks))
    federation.restart()
    engine = federation.engine
    assert sorted(engine.get("r1").owed) == ["c000", "c001", "c002"]
    for cid in ("c000", "c001"):
        receipt, chunks = sent[cid]
        engine.submit(receipt, len(chunks), enumerate(chunks))
    federation.clock.advance(150)  # past the deadline and the grace for resending
    engine.tick()
    assert engine.wait(engine.get("r1"), 5)
    assert engine.result(engine.get("r1")).contributor_ids == ["c000", "c001"]


def test_concurrent_adds_into_a_striped_sum_equal_the_serial_sum(rng):
    submissions = [[rng.integers(0, 2**32, size=1000, dtype=np.uint32) for _ in range(9)] for _ in range(40)]
    total = ChunkedSum(array_ops(np.dtype(np.uint32)), stripes=4)
    threads = [threading.Thread(target=total.add, args=(s,)) for s in submissions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sum(np.concatenate(s).astype(np.uint64) for s in submissions) % 2**32
    assert np.array_equal(total.concatenated(), expected.astype(np.uint32))


def test_memory_budget_serves_in_arrival_order_and_lets_an_oversized_submission_run_alone():
    budget = MemoryBudget(limit=10 * MIB)
    budget.acquire(6 * MIB)
    order: list[str] = []

    def take(name: str, size: int) -> None:
        budget.acquire(size)
        order.append(name)

    big = threading.Thread(target=take, args=("big", 10 * MIB))
    big.start()
    while not budget._queue:  # the big one waits first
        threading.Event().wait(0.01)
    small = threading.Thread(target=take, args=("small", 1 * MIB))
    small.start()
    threading.Event().wait(0.3)
    assert order == []  # the small one fits, but waits behind the big one
    budget.release(6 * MIB)
    big.join(5)
    assert order == ["big"]  # it runs alone: nothing else is held
    budget.release(10 * MIB)
    small.join(5)
    assert order == ["big", "small"] and budget.held == 1 * MIB


def test_memory_budget_refuses_what_it_can_never_hold_and_a_caller_that_left():
    budget = MemoryBudget(limit=8 * MIB)
    with pytest.raises(PayloadTooLarge, match="--max-inflight-mb"):
        budget.acquire(9 * MIB)
    budget.acquire(8 * MIB)
    with pytest.raises(ServiceUnavailable):
        budget.acquire(1 * MIB, active=lambda: False)
    assert budget.held == 8 * MIB


def test_automatic_budget_follows_the_model_within_free_memory():
    budget = MemoryBudget(available=4096 * MIB)
    assert budget.limit == 64 * MIB
    budget.know_submission_size(32 * MIB)
    assert budget.limit == 256 * MIB
    budget.know_submission_size(512 * MIB)
    assert budget.limit == budget.hard_limit == 1024 * MIB  # a quarter of what is free


def test_a_store_written_by_an_older_version_is_refused_not_misread(tmp_path):
    old = sqlite3.connect(tmp_path / "aggregator.db")
    old.execute("CREATE TABLE rounds (round_id TEXT PRIMARY KEY, seq INTEGER, state TEXT)")
    old.commit()
    old.close()
    (tmp_path / "aggregator.db").chmod(0o600)
    with pytest.raises(InvalidInput, match="schema version"):
        RoundStore(tmp_path / "aggregator.db")


def test_a_log_synced_after_its_round_was_recorded_and_deleted_is_not_brought_back(tmp_path):
    """The engine syncs an answer's log record outside the round's lock; when that answer
    completed the round, the reveal may already have recorded the outcome and deleted the log.
    The late sync has nothing to make durable and must not recreate the file."""
    store = RoundStore(tmp_path / "aggregator.db")
    record = RoundRecord("r1", 0, "open", 2, 3, 60.0, 0.0)
    store.create_round(record)
    store.append_event(record, Event(ANSWERED, 1.0, "c000", UNMASK, b"reveal"))
    store.purge(record)
    store.sync_log(record)
    assert not [name for name in (tmp_path / "aggregator.db-sums").iterdir() if name.suffix == ".log"]
    store.close()


def test_a_closed_log_is_never_synced_through_its_old_descriptor_number(tmp_path):
    """A sync that lost the race to a close returns instead of calling fdatasync on a number
    the process may already have given to another file (before: EBADF, or another file)."""
    log = _Log(tmp_path / "round.log")
    log.append(b"record")
    log.close()
    log.sync()
    with pytest.raises(RuntimeError, match="already recorded"):
        log.append(b"late")
