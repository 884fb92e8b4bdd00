"""The indexed in-memory LinkState hands each node what Flower's own would, once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue
from uuid import uuid4

import pytest
from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from server.indexed_linkstate import (
    PULL_INTERVAL,
    IndexedInMemoryLinkState,
    index_pending_messages,
    index_simulation_grid,
    sweep_pending_nodes,
)
from server.round_timeout import RoundTimeoutGrid

RUN_ID = 4242


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    """Messages take their run id from the task identity, as in the simulation process."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _simulation(nodes: int) -> tuple[InMemoryGrid, list[int]]:
    """A grid and its state as ``flwr.simulation`` builds them (a run, ``nodes`` nodes)."""
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    run = Run.create_empty(run_id=RUN_ID)
    run.primary_task_id = 7
    run.federation_id = NOOP_FEDERATION_ID
    state = factory.state()
    assert isinstance(state, InMemoryLinkState)
    state.run_ids[RUN_ID] = RunRecord(run=run)
    state.task_store[7] = Task(task_id=7, run_id=RUN_ID)
    node_ids = list(_register_nodes(nodes, factory))
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return grid, node_ids


def _push(grid: InMemoryGrid, destinations: list[int], ttl: float | None = None) -> list[str]:
    return list(
        grid.push_messages([Message(RecordDict(), d, "train", ttl=ttl) for d in destinations])
    )


def _sweep(state: InMemoryLinkState, node_ids: list[int]) -> dict[int, list[str]]:
    """One pass of the engine's extractor thread (``vce_api.add_messages_to_queue``)."""
    return {
        node: [m.metadata.message_id for m in state.get_message_ins(node_id=node, limit=1)]
        for node in node_ids
    }


def test_each_node_gets_what_flowers_state_gives_it_in_order_and_once() -> None:
    plain_grid, plain_nodes = _simulation(6)
    indexed_grid, indexed_nodes = _simulation(6)
    assert index_simulation_grid(indexed_grid)
    assert isinstance(indexed_grid.state, IndexedInMemoryLinkState)
    # Two messages for the first node, one for the third, none for the rest.
    plain_ids = _push(plain_grid, [plain_nodes[0], plain_nodes[2], plain_nodes[0]])
    indexed_ids = _push(indexed_grid, [indexed_nodes[0], indexed_nodes[2], indexed_nodes[0]])

    def shape(ids: list[str], sweep: dict[int, list[str]], nodes: list[int]) -> list[list[int]]:
        return [[ids.index(m) for m in sweep[n]] for n in nodes]

    assert isinstance(plain_grid.state, InMemoryLinkState)
    for _ in range(3):
        expected = shape(plain_ids, _sweep(plain_grid.state, plain_nodes), plain_nodes)
        got = shape(indexed_ids, _sweep(indexed_grid.state, indexed_nodes), indexed_nodes)
        assert got == expected
    assert expected == [[], [], [], [], [], []]  # all delivered, none twice


def test_a_state_converted_mid_run_keeps_what_was_already_pending() -> None:
    grid, nodes = _simulation(3)
    first, _ = _push(grid, [nodes[1], nodes[1]])
    state = grid.state
    assert isinstance(state, InMemoryLinkState)
    [delivered] = state.get_message_ins(node_id=nodes[1], limit=1)
    assert delivered.metadata.message_id == first
    indexed = index_pending_messages(state)
    assert indexed is state  # the engine's threads hold this very object
    [second] = indexed.get_message_ins(node_id=nodes[1], limit=None)
    assert second.metadata.message_id != first
    assert indexed.get_message_ins(node_id=nodes[1], limit=None) == []


def test_an_expired_message_is_never_handed_out() -> None:
    grid, nodes = _simulation(2)
    index_simulation_grid(grid)
    _push(grid, [nodes[0]], ttl=1e-6)
    assert grid.state.get_message_ins(node_id=nodes[0], limit=1) == []
    assert isinstance(grid.state, InMemoryLinkState)
    assert grid.state.message_ins_store == {}  # Flower's expiry check deleted it


def test_a_reply_still_reaches_the_serverapp_and_the_grid_pulls_less_often() -> None:
    grid, nodes = _simulation(2)
    index_simulation_grid(grid)
    assert grid.pull_interval == PULL_INTERVAL
    [message_id] = _push(grid, [nodes[1]])
    [message] = grid.state.get_message_ins(node_id=nodes[1], limit=1)
    reply_message = Message(RecordDict(), reply_to=message)
    reply_message.metadata.__dict__["_message_id"] = str(uuid4())  # as the engine's worker does
    grid.state.store_message_res(reply_message)
    [reply] = grid.pull_messages([message_id])
    assert reply.metadata.reply_to_message_id == message_id


def test_any_other_grid_is_left_alone() -> None:
    grid, _ = _simulation(1)
    assert not index_simulation_grid(RoundTimeoutGrid(grid, 5.0))
    assert type(grid.state) is InMemoryLinkState


def _one_pass(state: InMemoryLinkState, nodes: list[int], sweep: object) -> list[Message]:
    """One pass of an engine sweep (``f_stop`` is set as soon as the pass waits)."""
    queue: Queue[Message] = Queue()

    class _StopAfterOnePass(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            self.set()
            return True

    sweep(state, queue, dict.fromkeys(nodes, 0), _StopAfterOnePass())  # type: ignore[operator]
    return [queue.get_nowait() for _ in range(queue.qsize())]


def test_the_pending_sweep_hands_out_what_flowers_sweep_does() -> None:
    plain_grid, plain_nodes = _simulation(5)
    indexed_grid, indexed_nodes = _simulation(5)
    index_simulation_grid(indexed_grid)
    plain_ids = _push(plain_grid, [plain_nodes[3], plain_nodes[1], plain_nodes[3]])
    indexed_ids = _push(indexed_grid, [indexed_nodes[3], indexed_nodes[1], indexed_nodes[3]])
    assert isinstance(plain_grid.state, InMemoryLinkState)
    for _ in range(3):
        flowers = _one_pass(plain_grid.state, plain_nodes, vce_api._flower_add_messages_to_queue)
        ours = _one_pass(indexed_grid.state, indexed_nodes, sweep_pending_nodes)

        def handed(
            messages: list[Message], ids: list[str], nodes: list[int]
        ) -> set[tuple[int, int]]:
            return {
                (nodes.index(m.metadata.dst_node_id), ids.index(m.metadata.message_id))
                for m in messages
            }

        # One message per node per pass, the oldest first; the order across nodes is free.
        assert handed(ours, indexed_ids, indexed_nodes) == handed(flowers, plain_ids, plain_nodes)
    assert indexed_grid.state.pending_by_node == {}


def test_the_engine_starts_the_pending_sweep_once_a_simulation_grid_is_indexed() -> None:
    grid, _ = _simulation(1)
    index_simulation_grid(grid)
    assert vce_api.add_messages_to_queue is sweep_pending_nodes
