"""`MeteredGrid`: the ServerApp's Grid, counting the bytes of every message it sends and
receives, per node, as Flower serialises them for the wire (every object of the message
tree, deflated). With `keep=True` it also keeps those bytes, for tests that search the traffic
(for instance for a plaintext update). Wrap the grid a ServerApp gets:

    grid = MeteredGrid(grid)
    strategy.start(grid=grid, ...)
    grid.sent, grid.received   # bytes per node id
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def wire_bytes(message: Message) -> bytes:
    """The message as Flower puts it on the wire: each object of its tree, deflated."""
    return b"".join(obj.deflate() for obj in get_all_nested_objects(message).values())


class MeteredGrid(Grid):
    def __init__(self, grid: Grid, keep: bool = False) -> None:
        self._grid = grid
        self.keep = keep
        self.sent: dict[int, int] = defaultdict(int)
        self.received: dict[int, int] = defaultdict(int)
        self.traffic: list[bytes] = []

    def _count(self, message: Message, counter: dict[int, int], node: int) -> None:
        data = wire_bytes(message)
        counter[node] += len(data)
        if self.keep:
            self.traffic.append(data)

    def reset(self) -> None:
        self.sent.clear()
        self.received.clear()
        self.traffic.clear()

    # -- Grid --------------------------------------------------------------------------------

    def set_run(self, run):  # type: ignore[no-untyped-def]
        self._grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self):  # type: ignore[no-untyped-def]
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for message in messages:
            self._count(message, self.sent, message.metadata.dst_node_id)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        for reply in replies:
            self._count(reply, self.received, reply.metadata.src_node_id)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        for message in messages:
            self._count(message, self.sent, message.metadata.dst_node_id)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            self._count(reply, self.received, reply.metadata.src_node_id)
        return replies
