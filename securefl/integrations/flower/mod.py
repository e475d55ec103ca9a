"""`securefl_mod`: the node half of securefl in a Flower ClientApp.

    app = ClientApp(mods=[securefl_mod])            # Message API
    app = ClientApp(client_fn=client_fn, mods=[securefl_mod])   # legacy API

It answers the securefl messages of `SecureFedAvg` / `SecureAggregationWorkflow` and runs the
user's train function only when a stage asks for it; the update (arrays, weight and numeric
metrics) is protected by the scheme's client half before anything leaves the node, and the
reply carries nothing else. A train message without securefl's record is refused: a node that
installed the mod never sends a plaintext update, whatever the ServerApp asks. Evaluate and
query messages pass through untouched.

The scheme's session (public parameters) is checked against this node's pins (`node.py`) at the
hello and kept, public, in `Context.state`. The user's training runs at the submit stage (for
SecAgg+, in the same exchange as the mask set it follows: the node answers that stage first,
then trains and masks), so the key exchange before it carries no update; a request to train
earlier ends in the scheme's refusal to protect an update out of order. Between stages of a round, the
client round (keys, self-mask seed, the shares held for neighbours) is exported and kept in
`Context.state` only sealed under a key derived from this site's identity key
(`securefl.rounds.sealed`): Flower holds and, in simulation, pickles that state; it never holds
a secret in the clear. The identity key itself is read from its file at each message and never
enters the context."""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from ...errors import InvalidInput
from ...identity import Identity
from ...rounds.scheme import SUBMIT, ClientRound, ClientScheme, Stage, signed_receipt
from ...rounds.chunks import receipt_digest_of
from ...rounds.sealed import seal, unseal
from ...schemes import client_scheme
from ...tensors import ModelSpec, flatten
from ...v1 import aggregator_pb2
from . import node, wire
from .updates import named_update

log = logging.getLogger("flwr")
STATE = "securefl-node"  # this node's record in Context.state


class PlainTrainingRefused(InvalidInput):
    """The ServerApp asked this securefl node to train and reply in plaintext."""


def securefl_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
        return call_next(msg, context)
    request = wire.read_request(msg.content)
    if request is None:
        raise PlainTrainingRefused(
            "this node runs securefl_mod and sends updates only through secure aggregation, but the ServerApp "
            "sent a plain train message: use securefl's SecureFedAvg (Message API) or SecureAggregationWorkflow "
            "(legacy API) on the server")
    identity = node.identity(context)
    if isinstance(request, wire.Hello):
        reply = _hello(request, msg, context, identity)
    else:
        reply = _stage(request, msg, context, identity, call_next)
    return Message(wire.carrying(reply), reply_to=msg)


def _hello(request: wire.Hello, msg: Message, context: Context, identity: Identity) -> wire.HelloReply:
    """Accept the session if it matches this node's pins, keep it, and prove this identity."""
    client_scheme(aggregator_pb2.Session.FromString(request.session), identity, node.pins(context))
    context.state[STATE] = ConfigRecord({"session": request.session})
    digest = wire.session_digest(request.session)
    signed = wire.hello_message(context.run_id, context.node_id, request.nonce, digest)
    log.info("securefl: node %s joins as %s", context.node_id, identity.client_id)
    return wire.HelloReply(identity.client_id, identity.sign(signed))


def _stage(request: wire.StageRequest, msg: Message, context: Context, identity: Identity,
           call_next: ClientAppCallable) -> wire.Answer | wire.Submission:
    kept = context.state.config_records.get(STATE)
    session = kept.get("session") if kept is not None else None
    if not isinstance(session, bytes) or wire.session_digest(session) != request.session_digest:
        raise InvalidInput("a securefl stage arrived for a session this node has not accepted (no hello)")
    announced = aggregator_pb2.Session.FromString(session)
    scheme = client_scheme(announced, identity, node.pins(context))
    if request.ahead_round and request.train:
        raise InvalidInput("a node enters the next round ahead only with its final answer of this one, never with an "
                           "update")
    binding = _binding(context, request.round_id)
    job = _kept_round(kept, scheme, identity, binding, request)
    stage = Stage(request.stage, request.body)
    answer = None if stage.name == SUBMIT else wire.Answer(request.round_id, stage.name, job.answer(stage))
    reply: wire.Answer | wire.Submission
    if request.train:  # the submit stage, or the stage answered just before it (`Stage.submit_follows`)
        vector, weight, spec = _train(request, msg, context, call_next)
        if job is None:
            job = scheme.start(request.round_id, vector, weight)
        else:
            job.provide(vector, weight)
        protected = job.protect(stage if stage.name == SUBMIT else Stage(SUBMIT))
        receipt = signed_receipt(identity, request.round_id, scheme.name, spec.hash, protected,
                                 receipt_digest_of(announced.receipt_digest))
        reply = wire.Submission(request.round_id, receipt, protected.chunks, spec.to_json(), answer)
    elif answer is not None:
        reply = answer
    else:  # asked to submit without training: nothing leaves but what train returns in the exchange
        raise InvalidInput("a node submits only the update its train function returns in that exchange")
    kept_round = request.round_id
    if request.ahead_round and answer is not None:  # with its final answer: it keeps the next round instead
        job, kept_round, reply = _enter_ahead(request, scheme, answer)
        binding = _binding(context, kept_round)
    state = ConfigRecord({"session": session})
    if scheme.interactive:
        state.update({"round": kept_round, "sealed": seal(identity, binding, job.export())})
    context.state[STATE] = state
    return reply


def _binding(context: Context, round_id: str) -> tuple[str, ...]:
    """What a round's sealed state is bound to: this run, this node, that round."""
    return str(context.run_id), str(context.node_id), round_id


def _enter_ahead(request: wire.StageRequest, scheme: ClientScheme,
                 answer: wire.Answer) -> tuple[ClientRound, str, wire.Answer]:
    """Begin the round that follows and answer its opening stage now, with this round's final
    answer. The new round's keys are fresh and bound to its id, exactly as if asked when it
    opens; this round is over for the node, so dropping its state loses nothing. A server that
    asks before the node's final stage only ends the node's part in the current round, as a
    dropout would."""
    if request.ahead_round == request.round_id:
        raise InvalidInput("asked to enter, ahead, the round this node is in")
    job = scheme.begin(request.ahead_round)
    ahead = wire.Answer(request.ahead_round, request.ahead_stage, job.answer(Stage(request.ahead_stage)))
    return job, request.ahead_round, wire.Answer(answer.round_id, answer.stage, answer.body, ahead)


def _kept_round(kept: ConfigRecord, scheme: ClientScheme, identity: Identity, binding: tuple[str, ...],
                request: wire.StageRequest) -> ClientRound | None:
    """This node's round, resumed from its sealed state; for the first stage of an interactive
    round, a new round whose update comes at the submit stage; None for a single-stage round."""
    if kept.get("round") == request.round_id:
        return scheme.resume(request.round_id, unseal(identity, binding, kept["sealed"]))
    if request.stage == SUBMIT:
        return None
    if not scheme.interactive:
        raise InvalidInput(f"the {scheme.name} scheme has no stage {request.stage!r:.40}")
    return scheme.begin(request.round_id)


def _train(request: wire.StageRequest, msg: Message, context: Context,
           call_next: ClientAppCallable) -> tuple[np.ndarray, float, ModelSpec]:
    """Run the user's train function on the message without securefl's record; the flat update,
    its weight and its structure."""
    msg.content = RecordDict({key: record for key, record in msg.content.items() if key != wire.RECORD})
    trained = call_next(msg, context)
    if trained.has_error():
        raise InvalidInput(f"the train function failed: {trained.error.reason:.300}")
    named, weight = named_update(trained.content, request.layout, request.weight_key)
    vector, spec = flatten(named)
    return vector, weight, spec
