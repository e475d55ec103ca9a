"""securefl's Flower transport against real ClientApps in this process (`flower_local.LocalGrid`,
no Ray): the example app as written, and the attacks on the transport — a malicious ServerApp
replaying a stage, tampering with or moving a node's kept state, substituting the session; a
malicious node claiming another site's identity or sending hostile replies; and a node whose
configuration lacks what it needs."""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from flower_local import RUN_ID, LocalGrid  # noqa: E402
from flower_apps import enrol_sites  # noqa: E402
from securefl.enrolment import FEDERATION_FILE  # noqa: E402
from securefl.errors import InvalidInput  # noqa: E402
from securefl.identity import Identity  # noqa: E402
from securefl.keyfiles import IDENTITY_PASSPHRASE_ENV  # noqa: E402
from securefl.integrations.flower import SecureFedAvg, securefl_mod  # noqa: E402
from securefl.integrations.flower import wire  # noqa: E402
from securefl.integrations.flower.mod import STATE  # noqa: E402
from securefl.integrations.flower.node import ALLOW_PLAIN, FEDERATION, IDENTITY  # noqa: E402
from securefl.integrations.flower.server import SecureRounds  # noqa: E402
from securefl.masking.server import ADVERTISE, SHARE, UNMASK  # noqa: E402
from securefl.rounds.scheme import SUBMIT  # noqa: E402
from securefl.rounds.sealed import unseal  # noqa: E402
from securefl.v1 import aggregator_pb2, secagg_pb2, suspended_pb2  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower"
NODES = [11, 12, 13, 14]


@pytest.fixture
def enrolment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four sites enrolled centrally; their files in `tmp_path`, their passphrase in the environment."""
    monkeypatch.setenv(IDENTITY_PASSPHRASE_ENV, "flower-node-tests")
    enrol_sites(tmp_path, len(NODES), "flower-node-tests")
    return tmp_path


def settings(enrolment: Path, **extra: object) -> dict:
    return {IDENTITY: str(enrolment / "site-{partition-id}.identity.json"), FEDERATION: str(enrolment / FEDERATION_FILE),
            "local-epochs": 1, **extra}


def node_configs() -> dict[int, dict]:
    return {node: {"partition-id": i, "num-partitions": len(NODES)} for i, node in enumerate(NODES)}


def echo_train(msg: Message, context: Context) -> Message:
    """Training that adds the node's partition id to every value, with weight 10 + id."""
    pid = context.node_config["partition-id"]
    arrays = {k: Array(v.numpy() + pid) for k, v in msg.content["arrays"].items()}
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 10 + pid})}),
                   reply_to=msg)


def echo_app(*mods) -> ClientApp:  # noqa: ANN002
    app = ClientApp(mods=[*mods, securefl_mod])
    app.train()(echo_train)
    return app


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.INFO)
    logging.getLogger("flwr").addHandler(handler)
    yield lines
    logging.getLogger("flwr").removeHandler(handler)


def start(strategy: SecureFedAvg, grid: LocalGrid, rounds: int = 1):  # noqa: ANN201
    initial = ArrayRecord({"w": Array(np.zeros(5, np.float32))})
    return strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)


def strategy(enrolment: Path, scheme: str = "secagg", **kwargs: object) -> SecureFedAvg:
    options = {"fraction_evaluate": 0.0, "min_train_nodes": len(NODES), "min_available_nodes": len(NODES), **kwargs}
    return SecureFedAvg(scheme, federation=enrolment / FEDERATION_FILE, **options)


# -- the example, as written -----------------------------------------------------------------

def test_the_example_app_trains_securely_with_its_one_changed_line(enrolment: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from securefl_example.client_app import app
    from securefl_example.task import Net

    grid = LocalGrid({node: app for node in NODES}, node_configs(), settings(enrolment))
    secure = SecureFedAvg("secagg", federation=enrolment / FEDERATION_FILE, fraction_evaluate=1.0,
                          min_train_nodes=len(NODES), min_available_nodes=len(NODES))
    result = secure.start(grid=grid, initial_arrays=ArrayRecord(Net().state_dict()), num_rounds=2,
                          train_config=ConfigRecord({"lr": 0.1}))
    assert result.evaluate_metrics_clientapp[2]["eval_acc"] > result.evaluate_metrics_clientapp[1]["eval_acc"] > 0.2
    assert set(result.train_metrics_clientapp[2]) == {"train_loss"}
    assert "securefl_example" in sys.modules


def test_the_average_is_the_weighted_average_of_what_train_returned(enrolment: Path):
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    result = start(strategy(enrolment), grid)
    weights = np.array([10, 11, 12, 13])
    expected = (weights * np.arange(4)).sum() / weights.sum()
    assert np.allclose(result.arrays["w"].numpy(), expected, atol=1e-4)


# -- a malicious ServerApp ---------------------------------------------------------------------

def _messages(grid: LocalGrid, node: int, stage: str) -> list[Message]:
    return [m for m in grid.delivered if m.metadata.dst_node_id == node
            and isinstance(wire.read_request(m.content), wire.StageRequest)
            and wire.read_request(m.content).stage == stage]


def _resend(grid: LocalGrid, original: Message, **changes: object) -> Message:
    request = wire.read_request(original.content)
    fields = {**request.__dict__, **changes}
    message = Message(wire.carrying(wire.StageRequest(**fields)), dst_node_id=original.metadata.dst_node_id,
                      message_type=MessageType.TRAIN)
    message.metadata.__dict__["_message_id"] = "replayed"
    return grid.deliver(message)


class NothingAheadGrid(LocalGrid):
    """The grid of a ServerApp that never asks a node to enter the next round ahead (a server
    need not): each node keeps its round after answering its final stage."""

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for message in messages:
            record = message.content.config_records.get(wire.RECORD)
            for key in ("ahead-round", "ahead-stage"):
                if record is not None and key in record:
                    del record[key]
        return super().push_messages(messages)


def test_a_node_deals_its_shares_once_and_answers_one_unmask_request(enrolment: Path):
    """A server that asks again for the key shares gets the same message (never a second set of
    shares), and one that asks for a second unmask naming other survivors, which could get both
    secrets of a neighbour, gets nothing: the kept state remembers what the node answered."""
    grid = NothingAheadGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    start(strategy(enrolment), grid)
    share = _messages(grid, NODES[0], SHARE)[0]
    again = _resend(grid, share)
    assert wire.read_reply(again.content).body == wire.read_reply(grid.replied[share.metadata.message_id].content).body
    first = _messages(grid, NODES[0], UNMASK)[0]
    request = secagg_pb2.UnmaskRequest.FromString(wire.read_request(first.content).body)
    other = secagg_pb2.UnmaskRequest()
    other.CopyFrom(request)
    del other.survivors[-1]
    reply = _resend(grid, first, body=other.SerializeToString())
    assert reply.has_error() and "refusing to continue the round" in reply.error.reason


def test_rounds_after_the_first_start_at_key_sharing_with_the_keys_nodes_gave_ahead(enrolment: Path):
    """Each node answers the next round's opening stage (fresh SecAgg+ keys, bound to that
    round's id) with its unmask answer, so later rounds send no advertise message; the model
    is the same as without."""
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    result = start(strategy(enrolment), grid, rounds=3)
    weights = np.array([10, 11, 12, 13])
    assert np.allclose(result.arrays["w"].numpy(), 3 * (weights * np.arange(4)).sum() / weights.sum(), atol=1e-4)
    for node in NODES:
        assert len(_messages(grid, node, ADVERTISE)) == 1 and len(_messages(grid, node, SHARE)) == 3
        unmasks = [wire.read_request(m.content) for m in _messages(grid, node, UNMASK)]
        shares = [wire.read_request(m.content) for m in _messages(grid, node, SHARE)]
        assert [u.ahead_round for u in unmasks[:2]] == [s.round_id for s in shares[1:]]
        assert all(u.ahead_stage == ADVERTISE for u in unmasks)


def test_a_node_that_failed_its_unmask_advertises_in_the_next_round_beside_nodes_that_answered_ahead(
        enrolment: Path, logs: list[str]):
    """A node whose unmask fails gives no early answer: the next round sends it the opening stage
    while the others start from their early keys, and it takes part in full."""
    failed: list[str] = []

    def fail_first_unmask(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
        request = wire.read_request(msg.content)
        if isinstance(request, wire.StageRequest) and request.stage == UNMASK and not failed:
            failed.append(request.round_id)
            raise RuntimeError("the node's process died")
        return call_next(msg, context)

    apps = {node: echo_app() for node in NODES[:3]} | {NODES[3]: echo_app(fail_first_unmask)}
    grid = LocalGrid(apps, node_configs(), settings(enrolment))
    result = start(strategy(enrolment, min_clients=3, timeout=1.0), grid, rounds=2)
    assert failed and any(f"node {NODES[3]} is dropped" in line for line in logs)
    assert [len(_messages(grid, node, ADVERTISE)) for node in NODES] == [1, 1, 1, 2]
    weights = np.array([10, 11, 12, 13])
    assert np.allclose(result.arrays["w"].numpy(), 2 * (weights * np.arange(4)).sum() / weights.sum(), atol=1e-4)


def test_a_node_that_entered_the_next_round_ahead_answers_nothing_more_of_the_last(enrolment: Path):
    """Once a node has given its final answer and entered the next round, its kept state is that
    round's: the last round's key shares and unmask request, asked again, get only errors."""
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    start(strategy(enrolment), grid)
    unmask = _messages(grid, NODES[0], UNMASK)[0]
    ahead = wire.read_request(unmask.content).ahead_round
    assert grid.context(NODES[0]).state.config_records[STATE]["round"] == ahead
    for message in (_messages(grid, NODES[0], SHARE)[0], unmask):
        assert _resend(grid, message, ahead_round="", ahead_stage="").has_error()
    assert grid.context(NODES[0]).state.config_records[STATE]["round"] == ahead


def test_a_server_asking_a_node_ahead_into_its_own_round_or_with_an_update_is_refused(enrolment: Path):
    grid = NothingAheadGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    start(strategy(enrolment), grid)
    unmask = _messages(grid, NODES[0], UNMASK)[0]
    request = wire.read_request(unmask.content)
    reply = _resend(grid, unmask, ahead_round=request.round_id, ahead_stage=ADVERTISE)
    assert reply.has_error() and "the round this node is in" in reply.error.reason
    model = RecordDict({"arrays": ArrayRecord({"w": Array(np.ones(5, np.float32))})})
    fields = {**request.__dict__, "stage": SUBMIT, "body": b"", "train": True, "ahead_round": "next",
              "ahead_stage": ADVERTISE}
    message = Message(wire.carrying(wire.StageRequest(**fields), model), dst_node_id=NODES[0],
                      message_type=MessageType.TRAIN)
    message.metadata.__dict__["_message_id"] = "ahead-with-update"
    reply = grid.deliver(message)
    assert reply.has_error() and "never with an update" in reply.error.reason


def test_a_forged_answer_given_ahead_drops_its_node_from_the_next_round(enrolment: Path, logs: list[str]):
    """The engine checks an answer given ahead when its round opens, like any other: a node whose
    early round keys are garbage takes no part in that round, which completes without it."""
    def forge(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
        reply = call_next(msg, context)
        record = reply.content.config_records[wire.RECORD]
        if "ahead-body" in record:
            record["ahead-body"] = b"\xff\x00garbage"
        return reply

    apps = {node: echo_app() for node in NODES[:3]} | {NODES[3]: echo_app(forge)}
    grid = LocalGrid(apps, node_configs(), settings(enrolment))
    result = start(strategy(enrolment, min_clients=3, timeout=1.0), grid, rounds=2)
    assert any(f"node {NODES[3]} is dropped" in line and "not a valid" in line for line in logs)
    weights = np.array([10, 11, 12, 13])
    first = (weights * np.arange(4)).sum() / weights.sum()
    second = (weights[:3] * np.arange(3)).sum() / weights[:3].sum()
    assert np.allclose(result.arrays["w"].numpy(), first + second, atol=1e-4)


def test_a_server_asking_a_node_to_train_and_submit_at_the_wrong_stage_gets_no_update(enrolment: Path):
    """The mask set and the masked input travel in one exchange; a ServerApp that asks for the
    update with another stage (here the key shares, replayed with the model to train) gets an
    error from the node's scheme, never a submission."""
    grid = NothingAheadGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    start(strategy(enrolment), grid)
    share = _messages(grid, NODES[0], SHARE)[0]
    request = wire.read_request(share.content)
    model = RecordDict({"arrays": ArrayRecord({"w": Array(np.ones(5, np.float32))})})
    fields = {**request.__dict__, "train": True}
    message = Message(wire.carrying(wire.StageRequest(**fields), model), dst_node_id=NODES[0],
                      message_type=MessageType.TRAIN)
    message.metadata.__dict__["_message_id"] = "train-at-share"
    reply = grid.deliver(message)
    assert reply.has_error() and "already has its update" in reply.error.reason


def test_a_server_asking_for_a_submission_without_training_gets_no_update(enrolment: Path):
    """A node submits only what its train function returns in the same exchange: a submit stage
    without the train flag (an update the node would have to have kept) gets an error."""
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    start(strategy(enrolment), grid)
    request = wire.read_request(_messages(grid, NODES[0], SHARE)[0].content)
    fields = {**request.__dict__, "round_id": "another-round", "stage": SUBMIT, "body": b"", "train": False}
    message = Message(wire.carrying(wire.StageRequest(**fields)), dst_node_id=NODES[0], message_type=MessageType.TRAIN)
    message.metadata.__dict__["_message_id"] = "submit-untrained"
    reply = grid.deliver(message)
    assert reply.has_error() and "submits only the update its train function returns" in reply.error.reason


def test_kept_state_is_sealed_bound_to_its_node_and_never_pickled_in_the_clear(enrolment: Path):
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    rounds = SecureRounds("secagg", federation=enrolment / FEDERATION_FILE, timeout=5)
    rounds.identify(grid, NODES)
    digest = wire.session_digest(rounds.session)
    for node in NODES[:2]:
        message = Message(wire.carrying(wire.StageRequest("r-1", ADVERTISE, b"", digest)),
                          dst_node_id=node, message_type=MessageType.TRAIN)
        message.metadata.__dict__["_message_id"] = f"m{node}"
        assert not grid.deliver(message).has_error()

    kept = grid.context(NODES[0]).state.config_records[STATE]
    identity = Identity.load(enrolment / "site-0.identity.json")
    state = suspended_pb2.SecAggClientState.FromString(unseal(identity, (str(RUN_ID), str(NODES[0]), "r-1"),
                                                              kept["sealed"]))
    pickled = grid.contexts[NODES[0]]
    for secret in (state.cipher_private_key, state.mask_private_key, state.self_seed):
        assert len(secret) == 32 and secret not in pickled

    def share(node: int) -> Message:
        message = Message(wire.carrying(wire.StageRequest("r-1", SHARE, b"", digest)), dst_node_id=node,
                          message_type=MessageType.TRAIN)
        message.metadata.__dict__["_message_id"] = f"share{node}"
        return message

    tampered = grid.context(NODES[0])
    sealed = bytearray(tampered.state.config_records[STATE]["sealed"])
    sealed[-1] ^= 1
    tampered.state.config_records[STATE]["sealed"] = bytes(sealed)
    grid.contexts[NODES[0]] = pickle.dumps(tampered)
    assert "does not open" in grid.deliver(share(NODES[0])).error.reason

    moved = grid.context(NODES[1])  # node 1 given node 0's state: another identity and node
    moved.state[STATE] = kept
    grid.contexts[NODES[1]] = pickle.dumps(moved)
    assert "does not open" in grid.deliver(share(NODES[1])).error.reason


def test_a_substituted_or_downgraded_session_is_refused_at_the_hello(enrolment: Path, logs: list[str]):
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    plain = strategy(enrolment, "plain", timeout=1.0)
    assert start(plain, grid).arrays.keys() == set()  # no node accepts the unprotected scheme
    assert sum("does not allow it" in line for line in logs) == len(NODES)

    rounds = SecureRounds("secagg", federation=enrolment / FEDERATION_FILE)
    session = aggregator_pb2.Session.FromString(rounds.session)
    session.scheme = "ckks"
    session.he_epoch.scheme, session.he_epoch.context = "ckks", b"a context of the server's choosing"
    hello = Message(wire.carrying(wire.Hello(session.SerializeToString(), b"n" * 32)), dst_node_id=NODES[0],
                    message_type=MessageType.TRAIN)
    hello.metadata.__dict__["_message_id"] = "hello"
    reply = grid.deliver(hello)
    assert reply.has_error() and "pinned key-holder" in reply.error.reason


def test_a_stage_for_a_session_the_node_never_accepted_is_refused(enrolment: Path):
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), settings(enrolment))
    stage = Message(wire.carrying(wire.StageRequest("r-1", SUBMIT, b"", b"x" * 32, True),
                                  RecordDict({"arrays": ArrayRecord({"w": Array(np.ones(5, np.float32))})})),
                    dst_node_id=NODES[0], message_type=MessageType.TRAIN)
    stage.metadata.__dict__["_message_id"] = "stage"
    reply = grid.deliver(stage)
    assert reply.has_error() and "no hello" in reply.error.reason


# -- malicious or broken nodes -----------------------------------------------------------------

def impostor_app(real: Path) -> ClientApp:
    """A node that answers the hello as site-0, signing with its own (site-3) key."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        own = Identity.load(real / "site-3.identity.json")
        return Message(wire.carrying(wire.HelloReply("site-0", own.sign(b"anything"))), reply_to=msg)

    return app


def test_a_node_claiming_another_sites_identity_is_left_out(enrolment: Path, logs: list[str]):
    apps = {node: echo_app() for node in NODES[:3]} | {NODES[3]: impostor_app(enrolment)}
    grid = LocalGrid(apps, node_configs(), settings(enrolment))
    result = start(strategy(enrolment, min_train_nodes=3), grid)
    assert any(f"node {NODES[3]} is left out" in line and "signature" in line for line in logs)
    weights = np.array([10, 11, 12])
    assert np.allclose(result.arrays["w"].numpy(), (weights * np.arange(3)).sum() / weights.sum(), atol=1e-4)


def hostile_app(field: str, value: object) -> ClientApp:
    """A node running securefl_mod whose submissions are rewritten on the way out."""
    def rewrite(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001
        reply = call_next(msg, context)
        record = reply.content.config_records[wire.RECORD]
        if record["kind"] == "submission":
            record[field] = value
        return reply

    return echo_app(rewrite)


@pytest.mark.parametrize("field, value, refused", [
    ("chunks", "not a list", "list of bytes"),
    ("spec", b'{"kind":"numpy_dict","tensors":[["arrays/w",[6],"<f4"]]}', "does not match its signed receipt"),
    ("receipt", b"\xff\x00garbage", "not a valid Receipt"),
])
def test_hostile_replies_are_dropped_and_the_round_goes_on(enrolment: Path, logs: list[str], field: str,
                                                            value: object, refused: str):
    apps = {node: echo_app() for node in NODES[:3]} | {NODES[3]: hostile_app(field, value)}
    grid = LocalGrid(apps, node_configs(), settings(enrolment, **{ALLOW_PLAIN: True}))
    result = start(strategy(enrolment, "plain", min_clients=3, timeout=1.0), grid)
    assert any(f"node {NODES[3]} is dropped" in line and refused in line for line in logs)
    weights = np.array([10, 11, 12])
    assert np.allclose(result.arrays["w"].numpy(), (weights * np.arange(3)).sum() / weights.sum(), atol=1e-6)


@pytest.mark.parametrize("field, value, refused", [
    ("answer-stage", "confirm_survivors", "is late or early and refused"),
    ("answer-body", b"\xff\x00garbage", "not a valid"),
])
def test_a_submission_whose_bundled_answer_is_refused_is_not_counted(enrolment: Path, logs: list[str], field: str,
                                                                     value: object, refused: str):
    """SecAgg+'s mask set rides with the masked input; a node that tampers with it is dropped
    before its input is counted, and the others' sum is recovered without it."""
    apps = {node: echo_app() for node in NODES[:3]} | {NODES[3]: hostile_app(field, value)}
    grid = LocalGrid(apps, node_configs(), settings(enrolment))
    result = start(strategy(enrolment, "secagg", min_clients=3, timeout=1.0), grid)
    assert any(f"node {NODES[3]} is dropped" in line and refused in line for line in logs)
    weights = np.array([10, 11, 12])
    assert np.allclose(result.arrays["w"].numpy(), (weights * np.arange(3)).sum() / weights.sum(), atol=1e-4)


def test_a_node_without_its_identity_setting_is_told_which_setting_to_give(enrolment: Path, logs: list[str]):
    grid = LocalGrid({node: echo_app() for node in NODES}, node_configs(), {FEDERATION: str(enrolment / FEDERATION_FILE)})
    SecureRounds("secagg", federation=enrolment / FEDERATION_FILE).identify(grid, NODES[:1])
    assert any("securefl-identity" in line and "--node-config" in line for line in logs)


def test_the_examples_simulated_enrolment_is_made_once_and_refuses_a_stale_directory(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv(IDENTITY_PASSPHRASE_ENV, "example passphrase")
    from securefl_example.enrolment import enrol_simulated_sites

    first = enrol_simulated_sites(tmp_path / "sites", 3)
    assert enrol_simulated_sites(tmp_path / "sites", 3) == first  # the next run reuses it
    assert not list(tmp_path.glob("*.partial-*"))
    stale = tmp_path / "older"
    stale.mkdir()
    (stale / "site-0.identity.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"no federation.json \(an older or interrupted enrolment\); remove it"):
        enrol_simulated_sites(stale, 3)


def test_the_examples_enrolment_without_a_passphrase_names_where_to_set_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delenv(IDENTITY_PASSPHRASE_ENV, raising=False)
    from securefl_example.enrolment import enrol_simulated_sites

    with pytest.raises(InvalidInput, match=f"set {IDENTITY_PASSPHRASE_ENV} before Flower's local SuperLink starts"):
        enrol_simulated_sites(tmp_path / "sites", 3)
    assert not list(tmp_path.iterdir())  # nothing enrolled
