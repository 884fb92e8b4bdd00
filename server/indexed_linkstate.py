"""Pending messages indexed by node for Flower's in-memory LinkState (simulation only).

Flower 1.41's simulation engine hands messages to its workers from one thread that
asks the in-memory LinkState, every 0.1 s, for each registered node's next message
(``vce_api.add_messages_to_queue``), and ``InMemoryLinkState.get_message_ins`` answers
by scanning every stored message, checking its expiry and federation on the way. A
sweep therefore costs nodes x stored messages: with 10,000 enrolled and 1,000 sampled
it is about 50 s of CPU (5 us a pair, measured), repeated for as long as a round's
messages stay stored, in the process that also runs the ServerApp. That, not the
devices' training, made a 1,000-device round take minutes.

``index_pending_messages`` makes the one state the ServerApp's ``InMemoryGrid`` shares
with the engine an ``IndexedInMemoryLinkState``: the same object and data, with a
per-node list of undelivered message ids kept as messages are stored, so a node's
pull looks only at its own messages. Which messages a node gets, in which order, and
the expiry and federation checks on each are Flower's; messages of other nodes are
no longer checked for expiry on every pull (they still are when their own node pulls
them and when the ServerApp pulls replies). The ServerApp's own wait for replies
pulls every ``PULL_INTERVAL`` s instead of Flower's 0.1 s: each pull checks every
awaited message (about 30 us each, so 30 ms for 1,000), which at ten pulls a second
was the engine process's largest remaining cost. The engine's sweep itself still
called ``get_message_ins`` for all 10,000 nodes ten times a second (about 8% of a
core, more the longer a round takes on a loaded machine); ``sweep_pending_nodes``
replaces it, before the engine starts its thread, with a sweep over the nodes the
index holds messages for: the same one message per node per pass, the same checks.
Deployment (its grid, the SuperLink's own state) is untouched. Drop this once Flower
indexes pending messages.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from logging import INFO
from queue import Queue

from flwr.app import Message
from flwr.common import log
from flwr.server.superlink.linkstate import InMemoryLinkState
from flwr.serverapp import Grid
from flwr.supercore.date import now
from flwr.superlink.grid import InMemoryGrid

# Seconds between the ServerApp's pulls for replies in simulation (Flower's: 0.1).
PULL_INTERVAL = 0.5


class IndexedInMemoryLinkState(InMemoryLinkState):
    """``InMemoryLinkState`` whose ``get_message_ins`` reads a per-node index.

    Not constructed directly: ``index_pending_messages`` converts a live state.
    """

    # dst node id -> ids of its stored, undelivered messages, in insertion order.
    pending_by_node: dict[int, dict[str, None]]

    def store_message_ins(self, message: Message) -> str | None:
        """Store as Flower does, and index the message under its destination node."""
        with self.lock:
            message_id = super().store_message_ins(message)
            if message_id is not None:
                node = message.metadata.dst_node_id
                self.pending_by_node.setdefault(node, {})[message_id] = None
        return message_id

    def get_message_ins(
        self, node_id: int, limit: int | None, *, run_id: int | None = None
    ) -> list[Message]:
        """The node's undelivered messages (at most ``limit``), marked delivered."""
        if limit is not None and limit < 1:
            raise AssertionError("`limit` must be >= 1")
        if not self.pending_by_node.get(node_id):  # most nodes, most of the time
            return []
        found: list[Message] = []
        with self.lock:
            pending = self.pending_by_node.get(node_id, {})
            for message_id in list(pending):
                self._check_stored_messages({message_id})  # expiry, federation
                message = self.message_ins_store.get(message_id)
                if message is None or message.metadata.delivered_at != "":
                    del pending[message_id]  # deleted or delivered: never pending again
                    continue
                if run_id is not None and message.metadata.run_id != run_id:
                    continue
                found.append(message)
                if limit and len(found) == limit:
                    break
            delivered_at = now().isoformat()
            for message in found:
                message.metadata.delivered_at = delivered_at
                del pending[message.metadata.message_id]
            if not pending:
                self.pending_by_node.pop(node_id, None)
        return found


def index_pending_messages(state: InMemoryLinkState) -> IndexedInMemoryLinkState:
    """Convert ``state`` in place (threads holding it see the change at their next call)."""
    if isinstance(state, IndexedInMemoryLinkState):
        return state
    with state.lock:
        index: dict[int, dict[str, None]] = {}
        for message_id, message in state.message_ins_store.items():
            if message.metadata.delivered_at == "":
                index.setdefault(message.metadata.dst_node_id, {})[message_id] = None
        indexed = _as_indexed(state)
        indexed.pending_by_node = index
    return indexed


def index_simulation_grid(grid: Grid) -> bool:
    """Index the LinkState behind a simulation's grid, pull it less often, sweep it cheaply.

    Returns False, changing nothing, for any grid but the simulation engine's.
    """
    if not isinstance(grid, InMemoryGrid) or not isinstance(grid.state, InMemoryLinkState):
        return False
    index_pending_messages(grid.state)
    grid.pull_interval = max(grid.pull_interval, PULL_INTERVAL)
    if not install_pending_sweep():
        log(INFO, "hearth: the engine already sweeps every node; its sweep stays Flower's")
    return True


_VCE_API = "flwr.server.superlink.fleet.vce.vce_api"
Sweep = Callable[[InMemoryLinkState, "Queue[Message]", Mapping[int, int], threading.Event], None]


def sweep_pending_nodes(
    state: InMemoryLinkState,
    queue: Queue[Message],
    nodes_mapping: Mapping[int, int],
    f_stop: threading.Event,
) -> None:
    """Flower's ``vce_api.add_messages_to_queue``, visiting only nodes with pending messages.

    Each pass hands every node at most one message, every 0.1 s, through the state's
    own ``get_message_ins`` (expiry, federation, delivery marks), as Flower's does;
    until the state is indexed it visits every node, as Flower's does.
    """
    while not f_stop.is_set():
        nodes: list[int] | Mapping[int, int] = nodes_mapping
        if isinstance(state, IndexedInMemoryLinkState):
            with state.lock:
                nodes = [node for node in state.pending_by_node if node in nodes_mapping]
        for node_id in nodes:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        f_stop.wait(0.1)


def install_pending_sweep() -> bool:
    """Make the engine start ``sweep_pending_nodes`` instead of Flower's sweep.

    The engine looks the function up when it starts its extractor thread, after Ray
    is up; the ServerApp is loaded before that. Returns False when the engine's
    module is not loaded (not a simulation) or its thread already runs Flower's.
    """
    vce_api = sys.modules.get(_VCE_API)
    if vce_api is None:
        return False
    original: Sweep | None = getattr(vce_api, "_flower_add_messages_to_queue", None)
    if original is None:
        original = vce_api.add_messages_to_queue
        vce_api._flower_add_messages_to_queue = original  # type: ignore[attr-defined]
    vce_api.add_messages_to_queue = sweep_pending_nodes  # type: ignore[attr-defined]
    return not any(getattr(thread, "_target", None) is original for thread in threading.enumerate())


def _as_indexed(state: InMemoryLinkState) -> IndexedInMemoryLinkState:
    """The same object, now of the subclass (it adds methods, no slots or __init__ state)."""
    state.__class__ = IndexedInMemoryLinkState
    assert isinstance(state, IndexedInMemoryLinkState)
    return state
