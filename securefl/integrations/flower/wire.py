"""How securefl's messages ride in Flower messages: one `ConfigRecord` named "securefl" whose
values are the core's bytes (protobuf stage bodies, receipts, protected chunks). Everything
read here comes from the other side and is hostile: a missing field or a value of the wrong
type is `InvalidInput`, never a crash.

The only thing of its own this transport signs is the hello: a node proves it holds the
identity key of the enrolled client it claims to be, for this run, this node id, a fresh
nonce and the session it accepted (after checking it against its pins)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TypeVar

from flwr.app import ConfigRecord, RecordDict

from ...errors import InvalidInput
from ...v1 import common_pb2

RECORD = "securefl"
MESSAGE_LAYOUT, LEGACY_LAYOUT = "message", "legacy"  # where the user's train reply keeps its update
_HELLO_TAG = b"securefl/flower/hello/v1"

T = TypeVar("T")


@dataclass(frozen=True)
class Hello:
    """Server → node: the session (public parameters) and a nonce to sign."""

    session: bytes
    nonce: bytes


@dataclass(frozen=True)
class StageRequest:
    """Server → node: what to do next in a round. `train`: run the user's training first (the
    message then also carries the strategy's instructions and global model). `ahead_round`,
    `ahead_stage`: with the node's final stage of a round, the round that follows and its
    opening stage, for the node to answer ahead (`Stage.opening`, `Stage.final`)."""

    round_id: str
    stage: str
    body: bytes
    session_digest: bytes
    train: bool = False
    layout: str = MESSAGE_LAYOUT
    weight_key: str = "num-examples"
    ahead_round: str = ""
    ahead_stage: str = ""


@dataclass(frozen=True)
class HelloReply:
    client_id: str
    signature: bytes


@dataclass(frozen=True)
class Answer:
    """Node → server: the scheme's reply to an interactive stage; `ahead`: its answer to the
    opening stage of the round that follows, when the request asked for it."""

    round_id: str
    stage: str
    body: bytes
    ahead: Answer | None = None


@dataclass(frozen=True)
class Submission:
    """Node → server: the protected update, its signed receipt, and the public structure of the
    update (names, shapes, dtypes) so the server can rebuild the average; `answer`: the node's
    answer to the stage whose submission follows at once (`Stage.submit_follows`), sent with it."""

    round_id: str
    receipt: common_pb2.Receipt
    chunks: list[bytes]
    spec: bytes
    answer: Answer | None = None


def session_digest(session: bytes) -> bytes:
    return hashlib.sha256(b"securefl/flower/session/v1" + session).digest()


def hello_message(run_id: int, node_id: int, nonce: bytes, digest: bytes) -> bytes:
    """What a node signs in its hello."""
    fields = [str(run_id).encode(), str(node_id).encode(), nonce, digest]
    return _HELLO_TAG + b"".join(struct.pack(">I", len(f)) + f for f in fields)


# -- writing ---------------------------------------------------------------------------------

def carrying(message: Hello | StageRequest | HelloReply | Answer | Submission,
             content: RecordDict | None = None) -> RecordDict:
    """A copy of `content` (its records shared, not copied), or new content, carrying `message`."""
    out = RecordDict(dict(content.items())) if content is not None else RecordDict()
    out[RECORD] = _record(message)
    return out


def _record(message: Hello | StageRequest | HelloReply | Answer | Submission) -> ConfigRecord:
    if isinstance(message, Hello):
        values = {"kind": "hello", "session": message.session, "nonce": message.nonce}
    elif isinstance(message, StageRequest):
        values = {"kind": "stage", "round": message.round_id, "stage": message.stage, "body": message.body,
                  "session": message.session_digest, "train": message.train, "layout": message.layout,
                  "weight-key": message.weight_key}
        if message.ahead_round:
            values.update({"ahead-round": message.ahead_round, "ahead-stage": message.ahead_stage})
    elif isinstance(message, HelloReply):
        values = {"kind": "hello-reply", "client": message.client_id, "signature": message.signature}
    elif isinstance(message, Answer):
        values = {"kind": "answer", "round": message.round_id, "stage": message.stage, "body": message.body}
        if message.ahead is not None:
            values.update({"ahead-round": message.ahead.round_id, "ahead-stage": message.ahead.stage,
                           "ahead-body": message.ahead.body})
    else:
        values = {"kind": "submission", "round": message.round_id, "receipt": message.receipt.SerializeToString(),
                  "chunks": message.chunks, "spec": message.spec}
        if message.answer is not None:
            values.update({"answer-stage": message.answer.stage, "answer-body": message.answer.body})
    return ConfigRecord(values, keep_input=True)


# -- reading ---------------------------------------------------------------------------------

def read_request(content: RecordDict) -> Hello | StageRequest | None:
    """The securefl request in a message for a node; None when the message carries none."""
    record = content.config_records.get(RECORD)
    if record is None:
        return None
    kind = _field(record, "kind", str)
    if kind == "hello":
        return Hello(_field(record, "session", bytes), _field(record, "nonce", bytes))
    if kind == "stage":
        layout = _field(record, "layout", str)
        if layout not in (MESSAGE_LAYOUT, LEGACY_LAYOUT):
            raise InvalidInput(f"unknown update layout {layout!r:.40}")
        ahead = ("", "")
        if "ahead-round" in record:
            ahead = (_field(record, "ahead-round", str), _field(record, "ahead-stage", str))
        return StageRequest(_field(record, "round", str), _field(record, "stage", str), _field(record, "body", bytes),
                            _field(record, "session", bytes), _field(record, "train", bool), layout,
                            _field(record, "weight-key", str), *ahead)
    raise InvalidInput(f"unknown securefl request {kind!r:.40}")


def read_reply(content: RecordDict) -> HelloReply | Answer | Submission:
    """The securefl reply a node sent; InvalidInput when the reply is anything else (a node
    without `securefl_mod` answers with the user's own records, which are never read)."""
    record = content.config_records.get(RECORD)
    if record is None:
        raise InvalidInput("the reply carries no securefl record: the node does not run securefl_mod")
    kind = _field(record, "kind", str)
    if kind == "hello-reply":
        return HelloReply(_field(record, "client", str), _field(record, "signature", bytes))
    if kind == "answer":
        ahead = None
        if "ahead-round" in record:
            ahead = Answer(_field(record, "ahead-round", str), _field(record, "ahead-stage", str),
                           _field(record, "ahead-body", bytes))
        return Answer(_field(record, "round", str), _field(record, "stage", str), _field(record, "body", bytes), ahead)
    if kind == "submission":
        chunks = record.get("chunks")
        if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
            raise InvalidInput("a submission's chunks must be a list of bytes")
        try:
            receipt = common_pb2.Receipt.FromString(_field(record, "receipt", bytes))
        except Exception:
            raise InvalidInput("a submission's receipt is not a valid Receipt message") from None
        round_id = _field(record, "round", str)
        answer = None
        if "answer-stage" in record:
            answer = Answer(round_id, _field(record, "answer-stage", str), _field(record, "answer-body", bytes))
        return Submission(round_id, receipt, chunks, _field(record, "spec", bytes), answer)
    raise InvalidInput(f"unknown securefl reply {kind!r:.40}")


def _field(record: ConfigRecord, key: str, kind: type[T]) -> T:
    value = record.get(key)
    if type(value) is not kind:  # exact: a bool is not an int, an int is not a bool
        raise InvalidInput(f"securefl field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value
