"""Every wait of the ServerApp is bounded by the campaign's round timeout."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from server.round_timeout import RoundTimeoutGrid


class WaitingGrid(Grid):
    """Records the timeout of each wait; a wait without one would never end."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        raise NotImplementedError

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return [1, 2, 3]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self.timeouts.append(timeout)
        return []


def test_a_wait_without_a_timeout_gets_the_round_timeout() -> None:
    # Flower 1.41's DefaultWorkflow calls send_and_receive(messages) for plain fit and
    # evaluate: one laptop gone mid-round would hang the campaign.
    inner = WaitingGrid()
    grid = RoundTimeoutGrid(inner, 45.0)
    grid.send_and_receive([])
    grid.send_and_receive([], timeout=10.0)  # SecAgg+ stages pass their own
    assert inner.timeouts == [45.0, 10.0]
    assert list(grid.get_node_ids()) == [1, 2, 3]
