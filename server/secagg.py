"""SecAgg+ that survives a device dropping out at any stage of a round.

Flower 1.41's ``SecAggPlusWorkflow`` counts as *dead* every sampled node that is
not active at the unmask stage, including nodes that never finished the share
keys stage. Those nodes distributed no key shares, so their neighbours cannot
answer for them (``secaggplus_mod`` raises ``KeyError`` in ``_unmask``) and the
server finds too few shares to reconstruct them: the round halts although
enough devices remain. It also removes a dead node's pairwise masks with *every*
neighbour, including neighbours whose vectors were never summed.

``DropoutTolerantSecAggPlus`` narrows the protocol's bookkeeping to what the
cryptography actually involved, without touching the cryptography:

- after *setup*, the sampled set becomes the nodes that answered with their
  public keys, and the neighbour ring is drawn among them only (Flower draws it
  before anyone answered, so two silent neighbours could strand a node);
- after *share keys*, the sampled set becomes the nodes that sent key shares: a
  node that left before its shares were forwarded masked nothing and needs no
  recovery;
- after *collect masked vectors*, a node that dropped there keeps as neighbours
  only the nodes whose masked vectors were summed, so the server removes exactly
  the pairwise masks that are in the sum.

A round the protocol halts (every device declined, say) still reaches the
strategy: ``aggregate_fit`` gets no result and the refusals collected so far, so
the server says what happened instead of only "Secure aggregation halted.".

For distributed noise (``client.learning.distributed_noise``) the *unmask* request also says
how many devices are active in the whole round (``ACTIVE_COUNT_KEY``): Flower sends
each device only its neighbourhood's lists, and a device refuses to unmask a sum
with fewer noise shares than its policy calibrated them for.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from logging import INFO
from typing import cast

from flwr.app import Context, Message
from flwr.common import log
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server import Grid, LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

from privacy.distributed_noise import ACTIVE_COUNT_KEY
from server.round_timeout import RoundTimeoutGrid


class _ActiveCountGrid(RoundTimeoutGrid):
    """Adds the round's active device count to every unmask request it sends."""

    def __init__(self, inner: Grid, active: int) -> None:
        super().__init__(inner, timeout=0.0)
        self._active = active

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Tag each message, then send as the wrapped grid would."""
        tagged = list(messages)
        for message in tagged:
            message.content.config_records[RECORD_KEY_CONFIGS][ACTIVE_COUNT_KEY] = self._active
        return self._inner.send_and_receive(tagged, timeout=timeout)


class DropoutTolerantSecAggPlus(SecAggPlusWorkflow):
    """``SecAggPlusWorkflow`` whose rounds complete when devices drop out, above threshold."""

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run the four stages; a halted round is reported to the strategy with its failures."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        state = WorkflowState()
        steps = (
            self.setup_stage,
            self.share_keys_stage,
            self.collect_masked_vectors_stage,
            self.unmask_stage,
        )
        log(INFO, "Secure aggregation commencing.")
        for step in steps:
            if not step(grid, context, state):
                log(INFO, "Secure aggregation halted.")
                if state.nid_to_proxies:  # devices were sampled: the round happened
                    cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
                    current_round = cast(int, cfg[WorkflowKey.CURRENT_ROUND])
                    context.strategy.aggregate_fit(current_round, [], list(state.failures))
                return
        log(INFO, "Secure aggregation completed.")

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Send the configuration; only the nodes that answered with keys take part."""
        if not super().setup_stage(grid, context, state) and not state.nid_to_neighbours:
            return False  # nothing sampled: the workflow has not started
        answered = list(state.active_node_ids)
        random.shuffle(answered)
        half = state.num_shares >> 1
        state.nid_to_neighbours = {
            nid: {answered[(i + offset) % len(answered)] for offset in range(-half, half + 1)}
            for i, nid in enumerate(answered)
        }
        return self._keep_answering(state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Forward public keys; only the nodes that sent key shares can be recovered."""
        super().share_keys_stage(grid, context, state)
        return self._keep_answering(state)

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        """Collect masked vectors; a node lost here is unmasked against the summed ones only.

        Flower 1.41 appends each error reply of this stage to the failures twice
        (once per loop over the replies); the second copy is dropped so the
        server counts each refusal once.
        """
        before = len(state.failures)
        super().collect_masked_vectors_stage(grid, context, state)
        added = state.failures[before:]
        half = len(added) // 2
        first, second = added[:half], added[half:]
        if len(added) % 2 == 0 and all(
            a.args and b.args and a.args[0] is b.args[0] for a, b in zip(first, second, strict=True)
        ):
            del state.failures[before + half :]  # the same error replies, appended again
        summed = state.active_node_ids
        for nid in state.sampled_node_ids - summed:
            state.nid_to_neighbours[nid] = (state.nid_to_neighbours[nid] & summed) | {nid}
        return self._check_threshold(state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Flower's unmask, each request also carrying the round's active device count."""
        return bool(
            super().unmask_stage(_ActiveCountGrid(grid, len(state.active_node_ids)), context, state)
        )

    def _keep_answering(self, state: WorkflowState) -> bool:
        state.sampled_node_ids = set(state.active_node_ids)
        return len(state.sampled_node_ids) >= state.threshold and self._check_threshold(state)
