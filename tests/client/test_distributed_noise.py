"""Distributed noise under SecAgg+, on Flower's real protocol run in-process.

Each device's reply passes hearth's mods as in the ClientApp (SecAgg+ guard and
Flower's secaggplus_mod, then the noise share); the server is hearth's SecAgg+
workflow. What the server unmasks must carry the noise the accountant assumes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore.task_identity import TaskIdentity

from client.learning.app import distributed_noise_mod, secure_aggregation_mod
from client.learning.secagg_guard import check_secagg
from privacy.distributed_noise import (
    ACTIVE_COUNT_KEY,
    MODULUS_RANGE,
    QUANTIZATION_RANGE,
    required_clipping_range,
    share_std,
)
from privacy.policy import demo_policy_text, load_policy
from server.secagg import DropoutTolerantSecAggPlus

COORDS = 4000  # the sample variance of 4,000 coordinates is within 2.3% (1 sd) of the truth
TOLERANCE = 0.12  # fixed: more than 5 standard deviations of the estimate
CALIBRATED = 12  # min_cohort: the shares are calibrated for this many devices
Z, CLIP = 1.5, 2.0  # the accounted noise on the sum: std Z x CLIP


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.fixture(autouse=True)
def _distributed_policy(tmp_path, monkeypatch):
    text = demo_policy_text()
    for key, value in {
        "central_noise_multiplier": Z,
        "update_clip_norm": CLIP,
        "min_cohort": CALIBRATED,
        "distributed_noise": "true",
    }.items():
        [line] = [line for line in text.splitlines() if line.startswith(f"{key} = ")]
        text = text.replace(line, f"{key} = {value}")
    path = tmp_path / "policy.toml"
    path.write_text(text)
    monkeypatch.setenv("HEARTH_POLICY", str(path))


def _train(msg: Message, _: Context) -> Message:
    """A device whose clipped update is zero: what the server unmasks is the noise alone."""
    fitres = FitRes(
        Status(Code.OK, ""), ndarrays_to_parameters([np.zeros(COORDS, np.float32)]), 1, {}
    )
    return Message(compat.fitres_to_recorddict(fitres, False), reply_to=msg)


def _device(msg: Message, ctx: Context) -> Message:
    """The ClientApp's outer mods, in the ClientApp's order."""
    return secure_aggregation_mod(msg, ctx, lambda m, c: distributed_noise_mod(m, c, _train))


class Grid:
    """Delivers each message to a device; ``lost`` devices vanish before sending their vector."""

    def __init__(self, nodes: int, lost: Iterable[int] = ()) -> None:
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in range(100, 100 + nodes)
        }
        self.lost = set(lost)
        self.unmask_refusals = 0

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for sent in messages:
            msg = copy.deepcopy(sent)
            nid = msg.metadata.dst_node_id
            stage = msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
            if stage == Stage.COLLECT_MASKED_VECTORS and nid in self.lost:
                replies.append(Message(Error(1, "gone"), reply_to=msg))
                continue
            reply = _device(msg, self.contexts[nid])
            if stage == Stage.UNMASK and reply.has_error():
                self.unmask_refusals += 1
            replies.append(reply)
        return replies


def _unmasked_sum(grid: Grid) -> np.ndarray | None:
    """Run one SecAgg+ round; the sum the server unmasked (None: the round halted)."""
    start = [np.zeros(COORDS, dtype=np.float32)]
    legacy = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=FedAvg(min_fit_clients=2, min_available_clients=2, accept_failures=True),
        client_manager=SimpleClientManager(),
    )
    for nid in grid.contexts:
        legacy.client_manager.register(GridClientProxy(nid, grid, 1))  # type: ignore[arg-type]
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(start), True
    )
    workflow = DropoutTolerantSecAggPlus(
        num_shares=5,
        reconstruction_threshold=3,
        max_weight=1.0,
        clipping_range=required_clipping_range(load_policy()),
        quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE,
    )
    workflow(grid, legacy)  # type: ignore[arg-type]
    after = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], True)
    mean = parameters_to_ndarrays(after)[0].astype(np.float64)
    if np.array_equal(mean, start[0]):
        return None
    survivors = len(grid.contexts) - len(grid.lost)
    return mean * survivors  # FedAvg hands back the mean of weight-1 updates


def test_the_unmasked_sum_of_the_calibrated_cohort_has_the_accounted_variance():
    total = _unmasked_sum(Grid(CALIBRATED))
    assert total is not None
    assert abs(float(np.mean(total))) < 5 * Z * CLIP / np.sqrt(COORDS)
    assert np.var(total) == pytest.approx((Z * CLIP) ** 2, rel=TOLERANCE)


def test_a_dropout_above_the_calibrated_cohort_still_leaves_the_accounted_noise():
    total = _unmasked_sum(Grid(CALIBRATED + 2, lost=[101]))
    assert total is not None
    # CALIBRATED + 1 shares: at least the accounted variance, (n / m) of it.
    assert np.var(total) == pytest.approx(
        (Z * CLIP) ** 2 * (CALIBRATED + 1) / CALIBRATED, rel=TOLERANCE
    )


def test_a_dropout_below_the_calibrated_cohort_is_refused_at_unmask_and_the_round_halts():
    grid = Grid(CALIBRATED, lost=[101])
    assert _unmasked_sum(grid) is None
    assert grid.unmask_refusals == CALIBRATED - 1  # every survivor refused to unmask


def test_a_share_is_calibrated_so_the_minimum_cohort_sums_to_the_central_noise():
    policy = load_policy()
    assert share_std(policy) ** 2 * CALIBRATED == pytest.approx((Z * CLIP) ** 2)


def _setup(**changes: object) -> dict[str, object]:
    configs: dict[str, object] = {
        Key.STAGE: Stage.SETUP,
        Key.SAMPLE_NUMBER: 1000,
        Key.SHARE_NUMBER: 5,
        Key.THRESHOLD: 3,
        Key.CLIPPING_RANGE: required_clipping_range(load_policy()),
        Key.TARGET_RANGE: QUANTIZATION_RANGE,
        Key.MOD_RANGE: MODULUS_RANGE,
        Key.MAX_WEIGHT: 1.0,
    }
    return {**configs, **changes}


def test_hearths_ranges_sum_1000_devices_and_a_narrow_range_or_a_wrap_around_is_refused():
    policy = load_policy()
    assert check_secagg(_setup(), 1, policy) is None
    narrow = check_secagg(_setup(**{Key.CLIPPING_RANGE: CLIP + 0.1}), 1, policy)
    assert narrow is not None and "noise share" in narrow.reason
    wraps = check_secagg(_setup(**{Key.TARGET_RANGE: 1 << 22, Key.SAMPLE_NUMBER: 1100}), 1, policy)
    assert wraps is not None and "wrap" in wraps.reason


def test_an_unmask_without_the_rounds_active_count_is_refused():
    policy = load_policy()
    unmask = {
        Key.STAGE: Stage.UNMASK,
        Key.ACTIVE_NODE_ID_LIST: [1, 2, 3],
        Key.DEAD_NODE_ID_LIST: [],
    }
    assert check_secagg(unmask, 1, policy) is not None
    assert check_secagg({**unmask, ACTIVE_COUNT_KEY: 2}, 1, policy) is not None
    assert check_secagg({**unmask, ACTIVE_COUNT_KEY: CALIBRATED}, 1, policy) is None
