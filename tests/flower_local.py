"""`LocalGrid`: a Flower Grid that hands each pushed message at once to a ClientApp in this
process, one `Context` per node, for fast tests of the mod and the strategy against real
ClientApps without Ray. As Flower's simulation does, it keeps each node's context between
messages only as a pickle (Ray pickles contexts into its workers), so whatever a node keeps
must survive that, and turns an exception in a ClientApp into an error reply."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterable, Mapping

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 4242


class LocalGrid(Grid):
    def __init__(self, apps: Mapping[int, ClientApp], node_configs: Mapping[int, dict],
                 run_config: Mapping[str, object]) -> None:
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SUPERLINK_NODE_ID  # as a ServerApp
        self.apps = dict(apps)
        self.contexts = {node: pickle.dumps(Context(RUN_ID, node, dict(node_configs[node]), RecordDict(),
                                                    dict(run_config))) for node in apps}
        self.replies: dict[str, Message] = {}
        self.delivered: list[Message] = []
        self.replied: dict[str, Message] = {}  # message id -> the reply it got

    def context(self, node: int) -> Context:
        return pickle.loads(self.contexts[node])

    def deliver(self, message: Message) -> Message:
        """Run the node's ClientApp on `message` now; its reply (or error reply)."""
        node = message.metadata.dst_node_id
        context = self.context(node)
        try:
            reply = self.apps[node](message, context)
        except Exception as exc:  # noqa: BLE001 - Flower turns any ClientApp failure into an error reply
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc).__name__}: {exc}"),
                            reply_to=message)
        self.contexts[node] = pickle.dumps(context)
        self.replied[message.metadata.message_id] = reply
        return reply

    # -- Grid --------------------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        pass

    @property
    def run(self) -> Run:
        return Run.create_empty(run_id=RUN_ID)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.delivered.append(message)
            self.replies[message.metadata.message_id] = self.deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))
