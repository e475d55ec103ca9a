"""The ServerApp's half, shared by `SecureFedAvg` and `SecureAggregationWorkflow`: securefl's
round engine driven through a Flower `Grid`.

Each round drives every stage of the scheme with messages of its own: a node gets the next
message as soon as the engine has a stage for it, so no ClientApp ever waits for another
node (Flower's simulation may run only a few ClientApps at a time). Replies are pulled as they
arrive and handed to the engine one by one, which validates each and adds it into the running
sum in place: the ServerApp holds O(model) whatever the number of nodes, and only the revealed
average leaves the round. Every rule (which stage comes next, dropouts, quorum, deadlines,
checks of each submission) is the engine's and the scheme's; this module only carries bytes.

Before a node takes part, it proves which enrolled site it is: it signs a hello over this run,
its node id, a fresh nonce and the session it accepted (its pins checked). A node that cannot
(no `securefl_mod`, no identity, a session its pins refuse) is left out with an error saying
what to fix. A node that fails or falls silent later counts as dropped at the stage's
deadline, by the scheme's rules (SecAgg+ recovers its pairwise masks; HE needs its quorum).

A node's final stage of a round (SecAgg+'s unmask) also asks it to answer the opening stage of
the next round (SecAgg+'s fresh round keys), whose id is drawn then: the next round starts
from its second stage, one exchange per node fewer. The early answer is checked by the engine
like any other, when that round opens; one from a node the next round does not sample is
never used."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ...errors import InvalidInput, SecureFLError
from ...he.scheme import KeyHolderLink
from ...federation import Federation
from ...pki import KEYHOLDER
from ...rounds.engine import RoundEngine
from ...rounds.scheme import DONE, SUBMIT, RoundConfig, Stage
from ...rounds.store import RoundStore
from ...schemes import ServerOptions, server_scheme, session_of
from ...tensors import ModelSpec, unflatten
from ...tls import TlsConfig
from . import wire
from .updates import Average

log = logging.getLogger("flwr")
POLL_SECONDS = 0.01


@dataclass
class Upcoming:
    """The next secure round, drawn ahead: its id, and the opening answers nodes gave for it
    (node -> body). Whichever round of whichever run of the strategy comes next uses it."""

    round_id: str = field(default_factory=lambda: f"flower-{os.urandom(8).hex()}")
    answers: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """A completed round: the average, and the nodes whose updates are in it."""

    average: Average
    nodes: list[int]


class SecureRounds:
    """The scheme's server half, the session nodes check against their pins, and which enrolled
    site each node proved to be."""

    def __init__(self, scheme: str, *, federation: Federation | str | Path, keyholder: str | KeyHolderLink | None = None,
                 tls: TlsConfig | None = None, insecure: bool = False, min_clients: int | None = None,
                 timeout: float = 600.0) -> None:
        """`federation`: the federation file (roster and security parameters, as the nodes pin
        it); `keyholder`: for HE schemes, the key-holder's address, reached over mutual TLS with
        `tls`, the aggregator's TLS material of the federation (the ServerApp is the federation's
        aggregator), or any `KeyHolderLink`; `min_clients`: the quorum (default: the federation's
        `min_participants`); `timeout`: how long a node has for each message of a round, its
        training included; a node silent for longer counts as dropped (the HE round's deadline,
        SecAgg+'s stage deadline)."""
        if timeout <= 0:
            raise InvalidInput("timeout must be positive: it is how silent nodes are told from slow ones")
        self.federation = federation if isinstance(federation, Federation) else Federation.load(
            Path(federation).expanduser())
        self.roster = self.federation.roster
        if isinstance(keyholder, str):
            from ...services.keyholder_client import KeyHolderClient  # the key-holder is a gRPC service

            keyholder = KeyHolderClient(keyholder, tls, server=self.federation.party(KEYHOLDER), insecure=insecure)
        quorum = min_clients or self.federation.security.min_participants
        self.protection = server_scheme(scheme, ServerOptions(self.federation, quorum, keyholder, timeout))
        self.session = session_of(self.protection, self.roster).SerializeToString()
        self.config = RoundConfig(quorum, 0, timeout).validate()
        self.clients: dict[int, str] = {}  # node id -> enrolled client id, proven by its hello
        self.opening_stage: str | None = None  # the scheme's opening stage, once a round showed it
        self._upcoming: Upcoming | None = None  # the next round, drawn ahead

    @property
    def scheme(self) -> str:
        return self.protection.name

    # -- who is who --------------------------------------------------------------------------

    def identify(self, grid: Grid, node_ids: Iterable[int]) -> None:
        """Ask the nodes not yet identified to prove their identity; leave out those that cannot."""
        unknown = [node for node in node_ids if node not in self.clients]
        if not unknown:
            return
        nonces = {node: os.urandom(32) for node in unknown}
        messages = [Message(wire.carrying(wire.Hello(self.session, nonces[node])), dst_node_id=node,
                            message_type=MessageType.TRAIN, ttl=self.config.timeout_seconds) for node in unknown]
        replies = grid.send_and_receive(messages, timeout=self.config.timeout_seconds)
        answered = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            answered.add(node)
            try:
                self.clients[node] = self._verify_hello(grid, node, nonces[node], reply)
            except (SecureFLError, KeyError) as exc:
                log.error("securefl: node %s is left out: %s", node, exc)
        for node in set(unknown) - answered:
            log.error("securefl: node %s did not answer securefl's hello within %g s", node, self.config.timeout_seconds)

    def _verify_hello(self, grid: Grid, node: int, nonce: bytes, reply: Message) -> str:
        if reply.has_error():
            raise InvalidInput(f"its ClientApp failed on securefl's hello ({reply.error.reason:.300}); does it run "
                               "securefl_mod, e.g. ClientApp(mods=[securefl_mod]), with its identity and pins set?")
        hello = wire.read_reply(reply.content)
        if not isinstance(hello, wire.HelloReply):
            raise InvalidInput("it answered the hello with something else")
        signed = wire.hello_message(grid.run.run_id, node, nonce, wire.session_digest(self.session))
        self.roster.verify(hello.client_id, signed, hello.signature)
        if hello.client_id in self.clients.values():
            raise InvalidInput(f"another node already proved to be {hello.client_id}; each site runs one node")
        log.info("securefl: node %s is %s", node, hello.client_id)
        return hello.client_id

    # -- rounds ------------------------------------------------------------------------------

    def run(self, grid: Grid, server_round: int, train: Mapping[int, RecordDict], layout: str,
            weight_key: str) -> Outcome | None:
        """One secure round with the nodes of `train` (each with the content its training needs);
        None, logged, when the round fails (too few nodes, quorum, a refused reveal)."""
        self.identify(grid, train)
        nodes = {node: self.clients[node] for node in train if node in self.clients}
        if len(nodes) < self.config.min_clients:
            log.error("securefl round %s: %d identified nodes, %d needed; the round is skipped", server_round,
                      len(nodes), self.config.min_clients)
            return None
        this, self._upcoming = self._upcoming or Upcoming(), Upcoming()
        log.info("securefl round %s (%s, %s): %d nodes", server_round, this.round_id, self.scheme, len(nodes))
        started = time.perf_counter()
        try:
            return _GridRound(self, grid, this, self._upcoming, str(server_round), nodes, train, layout,
                              weight_key).run()
        except SecureFLError as exc:
            log.error("securefl round %s failed: %s", server_round, exc)
            return None
        finally:
            log.info("securefl round %s took %.2f s", server_round, time.perf_counter() - started)


class _GridRound:
    """One round: messages out as the engine has stages, replies into the engine as they come."""

    def __init__(self, rounds: SecureRounds, grid: Grid, this: Upcoming, following: Upcoming, group_id: str,
                 nodes: dict[int, str], train: Mapping[int, RecordDict], layout: str, weight_key: str) -> None:
        config = RoundConfig(rounds.config.min_clients, len(nodes), rounds.config.timeout_seconds)
        self.engine = RoundEngine(rounds.protection, RoundStore(), rounds.roster, config,
                                  implicit_rounds=False, watch=False)
        self.rounds, self.grid, self.round_id, self.group_id = rounds, grid, this.round_id, group_id
        self.answered_ahead, self.following = this.answers, following
        self.nodes, self.train, self.layout, self.weight_key = nodes, train, layout, weight_key
        self.idle = set(nodes)               # nodes without a message in flight that still take part
        self.in_flight: dict[str, int] = {}  # message id -> node
        self.spec: ModelSpec | None = None
        self.stages_seen: set[str] = set()

    def run(self) -> Outcome:
        round_ = self.engine.open_round(self.round_id, None)
        for client_id in self.nodes.values():  # the identified nodes, and they alone, take part
            self.engine.join(client_id, self.round_id)
        try:
            while not round_.ended:
                self.engine.tick()
                sent = self._send_stages()
                received = self._take_replies()
                if not (sent or received):
                    self.engine.wait(round_, POLL_SECONDS)
            result = self.engine.result(round_)
        finally:
            self.engine.stop()
        assert self.spec is not None  # a round completes only with accepted submissions
        average = Average(unflatten(result.average, self.spec), result.total_weight, result.contributors)
        contributors = set(round_.receipts)
        log.info("securefl round %s: average of %d contributions revealed (total weight %g)", self.group_id,
                 result.contributors, result.total_weight)
        return Outcome(average, sorted(node for node, cid in self.nodes.items() if cid in contributors))

    def _send_stages(self) -> int:
        messages = [m for m in (self._next_message(node) for node in sorted(self.idle)) if m is not None]
        if messages:
            for message_id, message in zip(self.grid.push_messages(messages), messages):
                self.in_flight[message_id] = message.metadata.dst_node_id
        return len(messages)

    def _next_message(self, node: int) -> Message | None:
        try:
            stage = self.engine.await_stage(self.round_id, self.nodes[node], 0)
        except SecureFLError as exc:
            log.warning("securefl round %s: node %s takes no further part: %s", self.group_id, node, exc)
            self.idle.discard(node)
            return None
        if stage is None:
            return None
        if stage.opening:
            self.rounds.opening_stage = stage.name
            if node in self.answered_ahead:
                self._take_answer(node, wire.Answer(self.round_id, stage.name, self.answered_ahead.pop(node)))
                return None
        self.idle.discard(node)
        if stage.name == DONE:
            return None
        self._log_stage(stage)
        # Nodes train when their update is due: earlier stages carry none. A stage whose
        # submission follows at once is answered and submitted in one exchange (one Grid round
        # trip fewer per round).
        train = stage.name == SUBMIT or stage.submit_follows
        ahead = ("", "")
        if stage.final and self.rounds.opening_stage:  # the node enters the next round in this exchange
            ahead = (self.following.round_id, self.rounds.opening_stage)
        request = wire.StageRequest(self.round_id, stage.name, stage.body, wire.session_digest(self.rounds.session),
                                    train, self.layout, self.weight_key, *ahead)
        content = wire.carrying(request, self.train[node] if train else None)
        return Message(content, dst_node_id=node, message_type=MessageType.TRAIN, group_id=self.group_id,
                       ttl=self.rounds.config.timeout_seconds)

    def _log_stage(self, stage: Stage) -> None:
        if stage.name not in self.stages_seen:
            self.stages_seen.add(stage.name)
            log.info("securefl round %s: stage %s", self.group_id, stage.name)

    def _take_replies(self) -> int:
        if not self.in_flight:
            return 0
        replies = list(self.grid.pull_messages(list(self.in_flight)))
        for reply in replies:
            node = self.in_flight.pop(reply.metadata.reply_to_message_id, None)
            if node is not None:
                self._take_answer(node, reply)
        return len(replies)

    def _take_answer(self, node: int, reply: Message | wire.Answer) -> None:
        """Hand the engine a node's reply; a node whose reply is refused takes no further part."""
        try:
            self._take(node, reply)
            self.idle.add(node)
        except SecureFLError as exc:
            self.idle.discard(node)
            log.warning("securefl round %s: node %s is dropped: %s", self.group_id, node, exc)

    def _take(self, node: int, reply: Message | wire.Answer) -> None:
        if isinstance(reply, Message):
            if reply.has_error():
                raise InvalidInput(f"its ClientApp failed: {reply.error.reason:.300}")
            answer = wire.read_reply(reply.content)
        else:
            answer = reply
        if isinstance(answer, wire.HelloReply) or answer.round_id != self.round_id:
            raise InvalidInput("it answered with a message of another exchange")
        client_id = self.nodes[node]
        if isinstance(answer, wire.Answer):
            self.engine.answer_stage(self.round_id, client_id, answer.stage, answer.body)
            ahead = answer.ahead
            if ahead is not None and (ahead.round_id, ahead.stage) == (self.following.round_id, self.rounds.opening_stage):
                self.following.answers[node] = ahead.body  # checked by the engine when that round opens
            return
        if answer.receipt.client_id != client_id:
            raise InvalidInput(f"it submitted under {answer.receipt.client_id!r:.70}, not the identity it proved")
        spec = ModelSpec.from_json(answer.spec)
        if spec.hash != answer.receipt.spec_hash or spec.size + 1 != answer.receipt.vector_length:
            raise InvalidInput("its update's structure does not match its signed receipt")
        if answer.answer is not None:  # the stage answered with it goes first, as if sent alone
            self.engine.answer_stage(self.round_id, client_id, answer.answer.stage, answer.answer.body)
        self.engine.submit(answer.receipt, len(answer.chunks), enumerate(answer.chunks))
        self.spec = self.spec or spec
