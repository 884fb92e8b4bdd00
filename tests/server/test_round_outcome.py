"""A server that says what a round did: counts by refusal code, nothing kept of an empty round."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore.task_identity import TaskIdentity

from policy.replies import BUNDLE_REFUSED, POLICY_MISMATCH, PROTOCOL_ERROR, UNAVAILABLE
from server.app import build_strategy
from server.checkpoints import read_round_outcomes
from server.config import CampaignConfig
from server.secagg import DropoutTolerantSecAggPlus
from tests.server.fakes import Manager, policy, reply, scaled_like


def _strategy(tmp_path, **config):
    return build_strategy(
        CampaignConfig(checkpoint_dir=str(tmp_path), **config),
        policy(**{"min_cohort = 2": "min_cohort = 2"}),
        run_id=7,
    )


def _refusal(code: int) -> Exception:
    return Exception(Error(code=code, reason="fixed word"))


def test_a_round_where_every_device_declines_says_so_and_leaves_nothing_behind(tmp_path, caplog):
    strategy = _strategy(tmp_path)
    params = ndarrays_to_parameters(strategy.inner.global_arrays)
    strategy.configure_fit(1, params, Manager(3))
    caplog.set_level(logging.INFO, logger="flwr")

    aggregated, _ = strategy.aggregate_fit(1, [], [_refusal(UNAVAILABLE)] * 3)

    assert aggregated is None
    assert (
        "round 1 aggregated nothing: 0 of 3 sampled devices trained, the minimum cohort is 2 "
        "(3 unavailable, 0 refused the bundle, 0 declined the policy, 0 protocol errors"
    ) in caplog.text
    assert strategy.configure_evaluate(1, params, Manager(3)) == []  # no metrics row
    assert strategy.rows == []
    assert not list(tmp_path.glob("round-[0-9]*"))  # no checkpoint
    [outcome] = read_round_outcomes(tmp_path, run_id=7)
    assert outcome["aggregated"] is False
    assert outcome["clients_unavailable"] == 3


def test_each_refusal_code_is_counted_and_devices_are_never_named(tmp_path, caplog):
    strategy = _strategy(tmp_path)
    model = strategy.inner.global_arrays
    strategy.configure_fit(1, ndarrays_to_parameters(model), Manager(7))
    caplog.set_level(logging.INFO, logger="flwr")
    failures = [_refusal(c) for c in (UNAVAILABLE, BUNDLE_REFUSED, POLICY_MISMATCH, PROTOCOL_ERROR)]

    aggregated, _ = strategy.aggregate_fit(1, [reply(scaled_like(model, 0.1))] * 2, failures)

    assert aggregated is not None
    assert (
        "round 1: 2 of 7 sampled devices trained (1 unavailable, 1 refused the bundle, "
        "1 declined the policy, 1 protocol errors, 0 broke the reply contract, "
        "0 failed otherwise, 1 no reply)"
    ) in caplog.text
    [outcome] = read_round_outcomes(tmp_path)
    assert outcome["aggregated"] is True
    assert not any("cid" in key or "node" in key for key in outcome)
    strategy.aggregate_evaluate(1, [], [])
    assert (tmp_path / "round-0001.json").is_file()


def test_a_skipped_round_still_records_the_central_noise_it_was_charged(tmp_path):
    strategy = build_strategy(
        CampaignConfig(checkpoint_dir=str(tmp_path), fraction_train=0.5),
        policy(central_noise=1.0),
        run_id=1,
    )
    strategy.configure_fit(1, ndarrays_to_parameters(strategy.inner.global_arrays), Manager(10))
    strategy.aggregate_fit(1, [], [_refusal(UNAVAILABLE)])
    ledger = json.loads((tmp_path / "campaign-ledger.json").read_text())
    assert len(ledger["noised_rounds"]) == 1


def test_outcomes_of_other_runs_and_torn_lines_are_ignored(tmp_path):
    (tmp_path / "round-outcomes.jsonl").write_text(
        '{"run_id": 1, "round": 1, "aggregated": true}\n'
        '{"run_id": 2, "round": 2, "aggregated": false}\n{"run_id": 2, "ro'
    )
    assert [o["round"] for o in read_round_outcomes(tmp_path, run_id=2)] == [2]


class DecliningGrid:
    """Devices that run Flower's SecAgg+ mod and all decline when asked to train."""

    def __init__(self, node_ids: Iterable[int]) -> None:
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in node_ids
        }

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for sent in messages:
            msg = copy.deepcopy(sent)
            stage = str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            if stage == Stage.COLLECT_MASKED_VECTORS:  # where the device's own gates run
                replies.append(Message(Error(UNAVAILABLE, "unavailable"), reply_to=msg))
            else:
                ctx = self.contexts[msg.metadata.dst_node_id]
                replies.append(secaggplus_mod(msg, ctx, lambda m, c: m))
        return replies


@pytest.fixture
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.mark.usefixtures("_task_identity")
def test_a_secure_round_every_device_declines_reaches_the_strategy_with_its_refusals(tmp_path):
    strategy = _strategy(tmp_path, secaggplus=True)
    grid = DecliningGrid([11, 22, 33])
    legacy = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    for nid in grid.contexts:
        legacy.client_manager.register(GridClientProxy(nid, grid, 1))  # type: ignore[arg-type]
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(strategy.inner.global_arrays), True
    )
    before = [a.copy() for a in strategy.inner.global_arrays]
    workflow = DropoutTolerantSecAggPlus(
        num_shares=3, reconstruction_threshold=2, max_weight=1.0, clipping_range=8.0
    )

    workflow(grid, legacy)  # type: ignore[arg-type]

    [outcome] = read_round_outcomes(tmp_path)
    assert outcome["aggregated"] is False
    assert outcome["clients"] == 3
    assert outcome["clients_unavailable"] == 3
    for new, old in zip(strategy.inner.global_arrays, before, strict=True):
        np.testing.assert_array_equal(new, old)
