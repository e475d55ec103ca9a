"""The untrusted aggregator's gRPC service: a thin transport over the round engine.

It authenticates every call by the caller's TLS certificate, decodes the request, hands it to
`securefl.rounds.engine.RoundEngine` (where every protocol and participation rule lives) with
the caller's authenticated id, and encodes the answer. It never holds an HE secret key nor a
plaintext update; it sees only the revealed aggregate.

Who may call what: sites (certificates of role `site`, enrolled and not revoked) join rounds,
submit, follow stages and fetch results, always as themselves and only about rounds they take
part in; operators open rounds and read any round's state; nobody else gets an answer. On a
plaintext server (`--insecure`, logged as a warning) nobody is authenticated, and the ids the
requests carry are taken as given.

Limits about connections live here (those about rounds live in the engine): each site holds at
most `CallCaps` long-poll calls (stage and result waits) and submission streams at once, counted
after it is authenticated, so no party can take every server thread. While the engine drains
for a shutdown, result waits end with UNAVAILABLE (clients ask again after the restart)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator

import grpc

from ..errors import InvalidInput, SecureFLError, ServiceUnavailable
from ..federation import Federation
from ..identity import Identity, ack_message
from ..pki import OPERATOR, SITE
from ..rounds.chunks import array_chunks
from ..rounds.engine import Round, RoundEngine
from ..rounds.scheme import RoundConfig
from ..v1 import aggregator_pb2, aggregator_pb2_grpc
from .caps import CallCaps
from .rpc import RUN_BYTES, authorize, chunk_message, run_chunks, translate_errors

log = logging.getLogger(__name__)

STAGE_POLL_SECONDS = 10.0  # a stage long-poll returns "nothing yet" after this, and the client asks again
RECENT_RESULTS = 2  # results kept serialized, ready to send


class AggregatorService(aggregator_pb2_grpc.AggregatorServicer):
    def __init__(self, engine: RoundEngine, federation: Federation, session: aggregator_pb2.Session,
                 signer: Identity, max_waits: int = 4, max_streams: int = 2) -> None:
        """`signer` is the aggregator's long-term identity, pinned by clients in federation.json:
        its signature on an acknowledgement is what a client can hold against it. `max_waits`
        and `max_streams`: concurrent long polls and submission streams per site."""
        self._engine = engine
        self._federation = federation
        self._session = aggregator_pb2.Session()
        self._session.CopyFrom(session)
        self._session.chunk_run_bytes = RUN_BYTES
        self._signer = signer
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, list[bytes]] = OrderedDict()
        self._waits = CallCaps(max_waits, "long-poll calls (stage or result waits)")
        self._streams = CallCaps(max_streams, "submission streams")

    def register(self, server: grpc.Server) -> None:
        aggregator_pb2_grpc.add_AggregatorServicer_to_server(self, _SerializedResults(server))

    # -- who is calling ------------------------------------------------------------------

    def _site(self, context: grpc.ServicerContext, claimed: str, action: str) -> str | None:
        """The calling site's id: its TLS identity, which must be the id the request names
        (when it names one). None only on a plaintext server with no id in the request."""
        peer = authorize(context, self._federation, (SITE,), claimed or None, action)
        return peer.party.party_id if peer is not None else (claimed or None)

    def _site_or_operator(self, context: grpc.ServicerContext, action: str) -> str | None:
        """The calling site's id; None for an operator (or anyone, on a plaintext server)."""
        peer = authorize(context, self._federation, (SITE, OPERATOR), action=action)
        return peer.party.party_id if peer is not None and peer.party.role == SITE else None

    @contextlib.contextmanager
    def _refusal_counted(self) -> Iterator[None]:
        """Report a submission this transport refuses before the engine sees it (the engine
        reports its own refusals)."""
        try:
            yield
        except SecureFLError as refusal:
            self._engine.metrics.submission_refused(type(refusal).__name__)
            raise

    # -- RPCs ----------------------------------------------------------------------------

    @translate_errors
    def GetSession(self, request, context) -> aggregator_pb2.Session:
        authorize(context, self._federation, (SITE, OPERATOR), action="read the session")
        return self._session

    @translate_errors
    def OpenRound(self, request, context) -> aggregator_pb2.RoundInfo:
        authorize(context, self._federation, (OPERATOR,), action="open rounds")
        config = None
        if request.HasField("config"):
            c = request.config
            config = RoundConfig(c.min_clients, c.expected_clients, c.timeout_seconds, c.vector_length)
        return _round_info(self._engine.open_round(request.round_id or None, config))

    @translate_errors
    def JoinRound(self, request, context) -> aggregator_pb2.RoundInfo:
        client_id = self._site(context, request.client_id, f"join rounds as {request.client_id!r:.70}")
        return _round_info(self._engine.join(client_id or "", request.round_id or None))

    @translate_errors
    def GetRound(self, request, context) -> aggregator_pb2.RoundInfo:
        client_id = self._site_or_operator(context, "read rounds")
        round_ = self._engine.get(request.round_id)
        if client_id is not None:
            self._engine.check_participant(round_, client_id)
        return _round_info(round_)

    @translate_errors
    def Submit(self, request_iterator, context) -> aggregator_pb2.SubmitAck:
        with contextlib.ExitStack() as held:
            with self._refusal_counted():
                caller = self._site(context, "", "submit")
                if caller is not None:
                    held.enter_context(self._streams.hold(caller))  # before reading anything
                first = next(request_iterator, None)
                if first is None or not first.HasField("header"):
                    raise InvalidInput("a submission starts with its header")
                receipt = first.header.receipt
                # The TLS peer and the signed receipt must name the same site.
                self._site(context, receipt.client_id or "-", f"submit for {receipt.client_id!r:.70}")
                if caller is None:
                    # A plaintext server knows a site only by the receipt it sends. Not by its
                    # connection: the clients of one process share one.
                    held.enter_context(self._streams.hold(receipt.client_id))
            round_, contributors = self._engine.submit(receipt, first.header.chunk_count, _chunks(request_iterator),
                                                       active=context.is_active)
        return aggregator_pb2.SubmitAck(
            round_id=round_.round_id, client_id=receipt.client_id, contributors=contributors,
            aggregator_key=self._signer.public_bytes, aggregator_signature=self._signer.sign(ack_message(receipt)),
        )

    @translate_errors
    def AwaitStage(self, request, context) -> aggregator_pb2.StageMessage:
        client_id = self._site(context, request.client_id, f"follow stages as {request.client_id!r:.70}") or ""
        return self._next_stage(request.round_id, client_id, context)

    @translate_errors
    def AnswerStage(self, request, context) -> aggregator_pb2.StageAck:
        """With `await_next`, the acknowledgement also carries the client's next stage, waited
        for as AwaitStage waits. Only the answer decides the call's status: whatever ends the
        wait early (a failed round, the site's cap on long polls) leaves the next stage empty,
        and the client's AwaitStage then hears it."""
        client_id = self._site(context, request.client_id, f"answer stages as {request.client_id!r:.70}") or ""
        self._engine.answer_stage(request.round_id, client_id, request.stage, request.body)
        ack = aggregator_pb2.StageAck(stage=request.stage)
        if request.await_next:
            with contextlib.suppress(SecureFLError):
                ack.next.CopyFrom(self._next_stage(request.round_id, client_id, context))
        return ack

    def _next_stage(self, round_id: str, client_id: str, context) -> aggregator_pb2.StageMessage:
        """The client's next stage, waited for up to STAGE_POLL_SECONDS (an empty stage: none yet)."""
        with self._waits.hold(client_id or context.peer()):
            stage = self._engine.await_stage(round_id, client_id, STAGE_POLL_SECONDS)
        reply = aggregator_pb2.StageMessage(round_id=round_id, client_id=client_id)
        if stage is not None:
            reply.stage, reply.body = stage.name, stage.body
        return reply

    @translate_errors
    def AwaitResult(self, request, context) -> Iterator[bytes]:
        client_id = self._site(context, "", "fetch results")
        round_ = self._engine.get(request.round_id)
        if client_id is not None:
            self._engine.check_contributor(round_, client_id)
        # A plaintext server cannot tell whose wait this is (the clients of one process share a
        # connection, and the request names no site), so only TLS servers count waits per site.
        with self._waits.hold(client_id) if client_id is not None else contextlib.nullcontext():
            while not self._engine.wait(round_, timeout=0.5):
                if not context.is_active():
                    return
                if self._engine.draining:
                    raise ServiceUnavailable("the aggregator is shutting down; ask again once it is back")
        yield from self._published(round_)

    def _published(self, round_: Round) -> list[bytes]:
        """A round's result as serialized `ResultMessage`s, built and serialized once and sent
        to every participant (see `_SerializedResults`)."""
        with self._lock:
            messages = self._recent.get(round_.round_id)
        if messages is None:
            result = self._engine.result(round_)
            chunks = array_chunks(result.average)
            messages = [aggregator_pb2.ResultMessage(header=aggregator_pb2.ResultHeader(
                round_id=round_.round_id, vector_length=result.average.size, total_weight=result.total_weight,
                contributors=result.contributors, chunk_count=len(chunks), dtype=result.average.dtype.str,
                contributor_ids=result.contributor_ids,
            ))] + [chunk_message(aggregator_pb2.ResultMessage, index, data) for index, data in enumerate(chunks)]
            messages = [message.SerializeToString() for message in messages]
            with self._lock:
                self._recent[round_.round_id] = messages
                while len(self._recent) > RECENT_RESULTS:
                    self._recent.popitem(last=False)
        return messages


class _SerializedResults:
    """The server as the generated registration sees it, with AwaitResult's serializer passing
    ready-made bytes through. gRPC serializes every message it sends: a 4 MB result fetched by
    50 sites was 200 MB of fresh buffers per round, copied and page-faulted in (15 % of the
    aggregator's page faults in a 50-site SecAgg+ round); serialized once, every send is the
    same bytes."""

    METHOD = "AwaitResult"

    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:  # noqa: ANN001
        # gRPC looks a call up among the registered methods below first, whether or not the
        # caller's stub registered it: these serve only methods that are not registered.
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: _bytes_through(h) if name == self.METHOD else h for name, h in handlers.items()})


def _bytes_through(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    return handler._replace(response_serializer=None)  # gRPC sends what the method yields: bytes


def _chunks(request_iterator) -> Iterator[tuple[int, bytes]]:
    for message in request_iterator:
        if message.HasField("chunk"):  # from a client older than chunk runs
            yield message.chunk.index, message.chunk.data
            continue
        if not message.HasField("chunks"):
            raise InvalidInput("a submission's header comes once, before its chunks")
        if not message.chunks.data:  # else a stream could go on for ever without a chunk counted
            raise InvalidInput("a message of a submission carries at least one chunk")
        yield from run_chunks(message.chunks)


def _round_info(round_: Round) -> aggregator_pb2.RoundInfo:
    record = round_.record
    return aggregator_pb2.RoundInfo(
        round_id=record.round_id, state=record.state,
        config=aggregator_pb2.RoundConfig(min_clients=record.min_clients, expected_clients=record.expected_clients,
                                          timeout_seconds=record.timeout_seconds),
        contributors=len(round_.receipts) if record.contributors is None else record.contributors,
        vector_length=record.vector_length or 0, spec_hash=record.spec_hash or b"", error=record.error_message or "",
        aggregation_seconds=round_.aggregation_seconds, reveal_seconds=round_.reveal_seconds,
    )
