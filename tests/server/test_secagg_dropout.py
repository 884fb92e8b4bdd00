"""SecAgg+ rounds with devices dropping out: Flower's client mod and server workflow in-process.

A fake grid delivers each message to ``secaggplus_mod`` with that device's own
context, the way a SuperNode would, and stops answering for a device from the
stage it "dies" at. An exception in the mod becomes an error reply, as the
device's runner sends one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore.task_identity import TaskIdentity

from server.secagg import DropoutTolerantSecAggPlus

STAGES = Stage.all()  # setup, share keys, collect masked vectors, unmask
SHAPE = (3, 2)


class FakeGrid:
    """Five devices; device ``nid`` sends an update full of ``nid``."""

    def __init__(self, node_ids: Iterable[int], dies_at: dict[int, str]) -> None:
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in node_ids
        }
        self.dies_at = dies_at
        self.client_errors: list[str] = []

    def _train(self, msg: Message, _: Context) -> Message:
        update = [np.full(SHAPE, float(msg.metadata.dst_node_id), dtype=np.float32) / 10]
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), 1, {})
        return Message(compat.fitres_to_recorddict(fitres, False), reply_to=msg)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for sent in messages:
            msg = copy.deepcopy(sent)  # each device receives its own copy, as over the wire
            nid = msg.metadata.dst_node_id
            stage = str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            if nid in self.dies_at and STAGES.index(stage) >= STAGES.index(self.dies_at[nid]):
                continue  # gone: no reply before the timeout
            try:
                replies.append(secaggplus_mod(msg, self.contexts[nid], self._train))
            except Exception as exc:
                self.client_errors.append(f"{stage}: {type(exc).__name__}")
                replies.append(Message(Error(1, "client error"), reply_to=msg))
        return replies


def _run_round(workflow: SecAggPlusWorkflow, grid: FakeGrid) -> np.ndarray | None:
    start = [np.zeros(SHAPE, dtype=np.float32)]
    legacy = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=FedAvg(min_fit_clients=2, min_available_clients=2),
        client_manager=SimpleClientManager(),
    )
    for nid in grid.contexts:
        legacy.client_manager.register(GridClientProxy(nid, grid, 1))  # type: ignore[arg-type]
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(start), True
    )
    workflow(grid, legacy)  # type: ignore[arg-type]
    after = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], True)
    arrays = parameters_to_ndarrays(after)
    return None if np.array_equal(arrays[0], start[0]) else arrays[0]


def _workflow(kind: type[SecAggPlusWorkflow]) -> SecAggPlusWorkflow:
    return kind(num_shares=3, reconstruction_threshold=2, max_weight=1.0, clipping_range=8.0)


NODES = [11, 22, 33, 44, 55]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need a run and node, as inside a ServerApp or ClientApp process."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.mark.parametrize("stage", STAGES)
def test_a_round_completes_with_the_survivors_mean_when_one_device_dies(stage: str) -> None:
    grid = FakeGrid(NODES, dies_at={55: stage})
    result = _run_round(_workflow(DropoutTolerantSecAggPlus), grid)
    survivors = NODES if stage == Stage.UNMASK else NODES[:-1]
    assert result is not None
    np.testing.assert_allclose(result, np.mean(survivors) / 10, atol=1e-4)
    assert grid.client_errors == []


def test_a_round_completes_when_two_devices_die_at_different_stages() -> None:
    grid = FakeGrid(NODES, dies_at={44: Stage.SETUP, 55: Stage.COLLECT_MASKED_VECTORS})
    result = _run_round(_workflow(DropoutTolerantSecAggPlus), grid)
    assert result is not None
    np.testing.assert_allclose(result, np.mean(NODES[:3]) / 10, atol=1e-4)


def test_flowers_own_workflow_halts_when_a_device_dies_before_sharing_keys() -> None:
    """The bug the subclass exists for (Flower 1.41): survivors raise KeyError in unmask."""
    grid = FakeGrid(NODES, dies_at={55: Stage.SETUP})
    assert _run_round(_workflow(SecAggPlusWorkflow), grid) is None
    assert "unmask: KeyError" in grid.client_errors


def test_a_round_completes_when_two_devices_die_before_sharing_keys() -> None:
    grid = FakeGrid(NODES, dies_at={44: Stage.SETUP, 55: Stage.SHARE_KEYS})
    result = _run_round(_workflow(DropoutTolerantSecAggPlus), grid)
    assert result is not None
    np.testing.assert_allclose(result, np.mean(NODES[:3]) / 10, atol=1e-4)


def test_a_round_below_the_threshold_ends_without_an_update() -> None:
    grid = FakeGrid(NODES[:3], dies_at={22: Stage.SETUP, 33: Stage.SETUP})
    assert _run_round(_workflow(DropoutTolerantSecAggPlus), grid) is None
