"""hearth's SecAgg+ mod holds the server to the device's policy, on Flower's real protocol.

A fake grid delivers each message of Flower's SecAgg+ workflow to a device's mod
with that device's own context, as a SuperNode would; a "malicious server" is the
same workflow with a message altered on its way to a device.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.app.error import Error
from flwr.client.mod import secaggplus_mod
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

from client.control.participation import read_deployment
from client.learning.app import secure_aggregation_mod
from client.learning.secagg_guard import check_secagg
from client.storage.home import hearth_home
from policy.replies import POLICY_MISMATCH, PROTOCOL_ERROR
from privacy.policy import demo_policy_text, load_policy
from server.secagg import DropoutTolerantSecAggPlus
from tests.server.fakes import small_policy_text

SHAPE = (3, 2)
NODES = [11, 22, 33, 44, 55]
Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Messages need a run and node, as inside a ServerApp or ClientApp process."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.fixture(autouse=True)
def _small_cohort_policy(tmp_path, monkeypatch):
    """Five devices: the demo policy's cohort rule (the default's is 800)."""
    path = tmp_path / "demo-policy.toml"
    path.write_text(demo_policy_text())
    monkeypatch.setenv("HEARTH_POLICY", str(path))


@pytest.fixture
def policy_with(tmp_path, monkeypatch):
    """Put this device under the default policy with some settings replaced."""

    def write(**settings: object) -> None:
        text = small_policy_text()
        for key, value in settings.items():
            [line] = [line for line in text.splitlines() if line.startswith(f"{key} = ")]
            text = text.replace(line, f"{key} = {value}")
        path = tmp_path / "policy.toml"
        path.write_text(text)
        monkeypatch.setenv("HEARTH_POLICY", str(path))

    return write


def _train(msg: Message, _: Context) -> Message:
    update = [np.full(SHAPE, float(msg.metadata.dst_node_id), dtype=np.float32) / 10]
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), 1, {})
    return Message(compat.fitres_to_recorddict(fitres, False), reply_to=msg)


class Grid:
    """Devices behind ``mod``; ``tamper`` may alter a message on its way to a device."""

    def __init__(
        self, mod: Mod, tamper: Callable[[Message], None] | None = None, nodes=NODES
    ) -> None:
        self.mod = mod
        self.tamper = tamper
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in nodes
        }
        self.replies: list[tuple[str, int, Message]] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for sent in messages:
            msg = copy.deepcopy(sent)
            stage = str(msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            if self.tamper is not None:
                self.tamper(msg)
            nid = msg.metadata.dst_node_id
            try:
                reply = self.mod(msg, self.contexts[nid], _train)
            except Exception:
                reply = Message(Error(1, "client error"), reply_to=msg)
            self.replies.append((stage, nid, reply))
            replies.append(reply)
        return replies

    def refusals(self, stage: str) -> set[int]:
        return {r.error.code for s, _, r in self.replies if s == stage and r.has_error()}


def _run_round(grid: Grid, shares: int = 3, threshold: int = 2) -> np.ndarray | None:
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
    workflow = DropoutTolerantSecAggPlus(
        num_shares=shares, reconstruction_threshold=threshold, max_weight=1.0, clipping_range=8.0
    )
    workflow(grid, legacy)  # type: ignore[arg-type]
    after = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], True)
    arrays = parameters_to_ndarrays(after)
    return None if np.array_equal(arrays[0], start[0]) else arrays[0]


def _message(configs: dict[str, object], node: int = 1) -> Message:
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(configs)})  # type: ignore[arg-type]
    return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN)


def _context(node: int = 1) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def _setup(shares: int, threshold: int, sampled: int = 5) -> dict[str, object]:
    return {
        Key.STAGE: Stage.SETUP,
        Key.SAMPLE_NUMBER: sampled,
        Key.SHARE_NUMBER: shares,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: 8.0,
        Key.TARGET_RANGE: 1 << 22,
        Key.MOD_RANGE: 1 << 32,
        Key.MAX_WEIGHT: 1.0,
    }


def _send(configs: dict[str, object], node: int = 1) -> Message:
    return secure_aggregation_mod(_message(configs, node), _context(node), _train)


def _refused_reason() -> str:
    """What the device kept for ``hearth status`` about its last refusal."""
    return str(read_deployment(hearth_home()).get("refusal", {}).get("reason"))


def test_an_honest_round_that_meets_the_policy_completes_through_hearths_mod():
    grid = Grid(secure_aggregation_mod)
    result = _run_round(grid)
    assert result is not None
    np.testing.assert_allclose(result, np.mean(NODES) / 10, atol=1e-4)
    assert grid.refusals(Stage.SETUP) == grid.refusals(Stage.UNMASK) == set()


def test_a_plain_round_under_a_policy_requiring_secaggplus_is_refused_and_recorded(policy_with):
    policy_with(require_secure_aggregation="true")
    trained: list[Message] = []
    plain = Message(
        RecordDict({"config": ConfigRecord({"round": 1})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    reply = secure_aggregation_mod(plain, _context(), lambda m, c: trained.append(m) or m)
    assert reply.has_error() and reply.error.code == POLICY_MISMATCH
    assert reply.error.reason == "policy mismatch"  # the server learns nothing more
    assert trained == []
    assert "plain round (no SecAgg+)" in _refused_reason()


def test_a_plain_evaluation_passes_under_a_policy_requiring_secaggplus(policy_with):
    policy_with(require_secure_aggregation="true")
    evaluate = Message(RecordDict(), dst_node_id=1, message_type=MessageType.EVALUATE)
    seen: list[Message] = []
    secure_aggregation_mod(evaluate, _context(), lambda m, c: seen.append(m) or m)
    assert seen == [evaluate]


def test_a_setup_with_2_shares_under_a_policy_requiring_3_is_refused():
    reply = _send(_setup(shares=2, threshold=2))
    assert reply.has_error() and reply.error.code == POLICY_MISMATCH
    assert "2 shares, the policy requires at least 3" in _refused_reason()


def test_a_setup_whose_threshold_is_below_the_policys_fraction_is_refused(policy_with):
    policy_with(min_num_shares=5, min_reconstruction_fraction=0.6)
    refused = _send(_setup(shares=5, threshold=2))
    assert refused.has_error() and refused.error.code == POLICY_MISMATCH
    assert "threshold 2 of 5 shares" in _refused_reason()
    accepted = _send(_setup(shares=5, threshold=3))
    assert not accepted.has_error()
    assert Key.PUBLIC_KEY_1 in accepted.content.config_records[RECORD_KEY_CONFIGS]


def test_a_round_whose_workflow_is_below_the_policy_halts_at_setup(policy_with):
    policy_with(min_num_shares=5, min_reconstruction_fraction=0.6)
    grid = Grid(secure_aggregation_mod)
    assert _run_round(grid, shares=3, threshold=2) is None
    assert grid.refusals(Stage.SETUP) == {POLICY_MISMATCH}


def test_a_setup_sampling_fewer_devices_than_the_cohort_is_refused(policy_with):
    policy_with(min_cohort=4)
    reply = _send(_setup(shares=3, threshold=2, sampled=3))
    assert reply.has_error() and reply.error.code == POLICY_MISMATCH
    assert "3 devices sampled" in _refused_reason()


def test_a_malformed_setup_is_a_protocol_error():
    configs = _setup(shares=3, threshold=2)
    configs[Key.SHARE_NUMBER] = 3.0
    reply = _send(configs)
    assert reply.has_error() and reply.error.code == PROTOCOL_ERROR


def _overlap_at_unmask(victim_holder: int) -> Callable[[Message], None]:
    """A server that lists an active neighbour of ``victim_holder`` as dead too."""

    def tamper(msg: Message) -> None:
        configs = msg.content.config_records[RECORD_KEY_CONFIGS]
        if configs[Key.STAGE] != Stage.UNMASK or msg.metadata.dst_node_id != victim_holder:
            return
        active = list(configs[Key.ACTIVE_NODE_ID_LIST])  # type: ignore[arg-type]
        victim = next(nid for nid in active if nid != victim_holder)
        configs[Key.DEAD_NODE_ID_LIST] = [*configs[Key.DEAD_NODE_ID_LIST], victim]  # type: ignore[misc]

    return tamper


def test_overlapping_active_and_dead_lists_are_refused():
    grid = Grid(secure_aggregation_mod, tamper=_overlap_at_unmask(11))
    _run_round(grid)
    [(_, _, reply)] = [(s, n, r) for s, n, r in grid.replies if s == Stage.UNMASK and n == 11]
    assert reply.has_error() and reply.error.code == PROTOCOL_ERROR
    assert "both active and dead" in _refused_reason()


def test_flowers_own_mod_hands_out_both_shares_of_a_node_listed_active_and_dead():
    """Why the check exists: Flower 1.41's ``_unmask`` answers an overlapping list."""
    grid = Grid(secaggplus_mod, tamper=_overlap_at_unmask(11))
    with contextlib.suppress(Exception):  # Flower's own server cannot combine the mixed shares
        _run_round(grid)
    [reply] = [r for s, n, r in grid.replies if s == Stage.UNMASK and n == 11]
    assert not reply.has_error()
    nids = list(reply.content.config_records[RECORD_KEY_CONFIGS][Key.NODE_ID_LIST])  # type: ignore[arg-type]
    assert len(nids) != len(set(nids))  # one node's mask-seed share and its key share


def _unmask(active: list[int], dead: list[int]) -> dict[str, object]:
    return {Key.STAGE: Stage.UNMASK, Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead}


def test_an_unmask_with_fewer_active_devices_than_the_cohort_is_refused(policy_with):
    policy_with(min_cohort=3)
    reply = _send(_unmask(active=[1, 2], dead=[3]))
    assert reply.has_error() and reply.error.code == POLICY_MISMATCH
    assert "2 active device(s), the policy's cohort is at least 3" in _refused_reason()


@pytest.mark.parametrize(
    ("active", "dead", "why"),
    [
        ([1, 2, 3], [3], "both active and dead"),
        ([1, 2, 2], [], "listed twice"),
        ([2, 3, 4], [1], "not listed active"),
        ([1, 2, True], [], "malformed"),
    ],
)
def test_an_inconsistent_unmask_is_a_protocol_error(active, dead, why):
    violation = check_secagg(_unmask(active, dead), 1, load_policy())
    assert violation is not None and violation.code == PROTOCOL_ERROR
    assert why in violation.reason


def test_the_other_stages_are_left_to_flowers_own_checks():
    policy = load_policy()
    assert check_secagg({Key.STAGE: Stage.SHARE_KEYS}, 1, policy) is None
    assert check_secagg({Key.STAGE: Stage.COLLECT_MASKED_VECTORS}, 1, policy) is None
    assert check_secagg(_unmask(active=[1, 2], dead=[3]), 1, policy) is None
