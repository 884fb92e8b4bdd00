"""A round timeout for every wait of the ServerApp, which Flower 1.41 leaves unbounded.

``DefaultWorkflow``'s plain fit and evaluate stages call
``grid.send_and_receive`` without a timeout, ignoring ``ServerConfig.round_timeout``:
one laptop that goes offline (lid closed, SuperNode killed) mid-round would hang
the campaign forever. Wrapping the grid gives those waits the campaign's round
timeout; the SecAgg+ stages already pass their own.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class RoundTimeoutGrid(Grid):
    """Delegates to ``inner``; a wait without a timeout gets ``timeout`` seconds."""

    def __init__(self, inner: Grid, timeout: float) -> None:
        """Wrap ``inner``."""
        self._inner = inner
        self._timeout = timeout

    def set_run(self, run: Run) -> None:
        """Same as the wrapped grid."""
        self._inner.set_run(run)

    @property
    def run(self) -> Run:
        """Same as the wrapped grid."""
        return self._inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Same as the wrapped grid."""
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Same as the wrapped grid."""
        return self._inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Same as the wrapped grid."""
        return self._inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Same as the wrapped grid."""
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Same as the wrapped grid."""
        return self._inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Wait at most ``timeout``, or the round timeout when the caller gave none."""
        return self._inner.send_and_receive(
            messages, timeout=self._timeout if timeout is None else timeout
        )
