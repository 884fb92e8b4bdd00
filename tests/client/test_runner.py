"""hearth's ClientApp runner without processes: the gate before the device's ClientApp runs."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.app.error import Error
from flwr.client.mod.utils import make_ffn
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore.task_identity import TaskIdentity

import client.deployment.runner as runner
import client.learning.app as device_app
import privacy as privacy_package
from client.control.consent import grant
from client.control.participation import read_deployment
from client.control.pause import pause
from client.deployment.bundle_trust import pin_org_key
from client.deployment.governor import Decision
from client.learning.device import Device
from client.learning.model_shape import model_spec
from policy.events import Modality
from policy.replies import BUNDLE_REFUSED, POLICY_MISMATCH, UNAVAILABLE, refusal_reason
from policy.signed_bundle import key_id
from server.secagg import DropoutTolerantSecAggPlus
from server.signing import generate_org_key, load_org_key, sign_bundle, sign_revocations
from tests.client.bundles import APP_ID, FAB_VERSION, fab_of, make_app, sha256
from tests.server.fakes import small_policy_text


class Ran(Exception):
    """Raised by the stand-in for the device's ClientApp: the gate let the round through."""


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return fab_of(make_app(tmp_path_factory.mktemp("app")))


@pytest.fixture
def org(tmp_path: Path, hearth_home: Path) -> tuple[Path, Path]:
    private, public = generate_org_key(tmp_path / "org")
    pin_org_key(hearth_home, public)
    return private, public


@pytest.fixture
def installs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The rounds the device's ClientApp was asked to run (as their server round)."""
    seen: list[str] = []

    def run(message: Message, context: Context) -> Message:
        seen.append(message.metadata.group_id)
        raise Ran

    monkeypatch.setattr(runner, "run_device_app", run)
    monkeypatch.setattr(runner, "lower_priority", lambda: None)  # never renice the test run
    return seen


@pytest.fixture
def governor(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """The governor's next decisions; each ``decide`` call consumes one."""
    decisions: list[Decision] = []

    class FakeGovernor:
        def __init__(self, settings: object) -> None:
            pass

        def decide(self) -> Decision:
            return decisions.pop(0)

    monkeypatch.setattr(runner, "Governor", FakeGovernor)
    return decisions


def _message(server_round: str = "3") -> Message:
    return Message(
        RecordDict({"fitins.config": ConfigRecord({"round": 3})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
        group_id=server_round,
    )


def _context(run_config: dict[str, str]) -> Context:
    return Context(run_id=9, node_id=1, node_config={}, state=RecordDict(), run_config=run_config)


def _task_input(
    monkeypatch: pytest.MonkeyPatch,
    fab: bytes,
    token: str,
    server_round: str = "3",
    revocations: str = "",
    **claim: str,
) -> None:
    message = _message(server_round)
    context = _context({"bundle-signature": token, "bundle-revocations": revocations})
    run = SimpleNamespace(
        run_id=9,
        fab_id=claim.get("fab_id", APP_ID),
        fab_version=claim.get("fab_version", FAB_VERSION),
    )
    content = SimpleNamespace(content=fab, hash_str=claim.get("fab_hash", sha256(fab)))
    monkeypatch.setattr(runner, "pull_task_input", lambda client: (message, context, run, content))


def _gate(home: Path) -> runner._Task:
    task = runner._Task()
    try:
        runner._run_gated(None, home, task)  # type: ignore[arg-type]
    except Ran:
        task.details = "ran"
    return task


def _token(key: Path, fab: bytes, version: int = 1, **kwargs: float) -> str:
    return sign_bundle(fab, load_org_key(key), version=version, **kwargs).token


def _error_code(task: runner._Task) -> int:
    assert task.reply is not None and task.reply.has_error()
    return task.reply.error.code


def _says_nothing_but_its_code(task: runner._Task, code: int) -> None:
    assert _error_code(task) == code
    assert task.reply is not None and task.reply.error.reason == refusal_reason(code)
    assert task.details in ("ran", refusal_reason(code))


def _refused(home: Path, task: runner._Task) -> dict[str, object]:
    _says_nothing_but_its_code(task, BUNDLE_REFUSED)
    assert task.exit_code == 2
    refusal = read_deployment(home)["refusal"]
    assert isinstance(refusal, dict)
    return refusal


def test_without_consent_the_device_declines_with_the_one_unavailable_code(
    monkeypatch, hearth_home, org, installs, fab
):
    _task_input(monkeypatch, fab, _token(org[0], fab))
    task = _gate(hearth_home)
    _says_nothing_but_its_code(task, UNAVAILABLE)
    assert installs == []
    assert "no consent" in read_deployment(hearth_home)["decline"]["reason"]  # for the employee


def test_an_unsigned_run_learns_nothing_of_consent_or_pause(
    monkeypatch, hearth_home, org, installs, fab
):
    _task_input(monkeypatch, fab, "")
    without_consent = _gate(hearth_home)
    grant(hearth_home, (Modality.POINTER,))
    pause(hearth_home)
    paused = _gate(hearth_home)
    for task in (without_consent, paused):
        _says_nothing_but_its_code(task, BUNDLE_REFUSED)
    assert installs == []


def test_a_paused_device_declines_the_round(monkeypatch, hearth_home, org, installs, fab):
    grant(hearth_home, (Modality.POINTER,))
    pause(hearth_home)
    _task_input(monkeypatch, fab, _token(org[0], fab))
    _says_nothing_but_its_code(_gate(hearth_home), UNAVAILABLE)
    assert installs == []


def test_a_bundle_signed_by_another_key_is_refused_and_nothing_runs(
    monkeypatch, tmp_path, hearth_home, org, installs, fab
):
    grant(hearth_home, (Modality.POINTER,))
    other, _ = generate_org_key(tmp_path / "other")
    _task_input(monkeypatch, fab, _token(other, fab))
    refusal = _refused(hearth_home, _gate(hearth_home))
    assert installs == []
    assert "signed by another key" in str(refusal["reason"])


def test_an_unsigned_bundle_is_refused(monkeypatch, hearth_home, org, installs, fab):
    grant(hearth_home, (Modality.POINTER,))
    _task_input(monkeypatch, fab, "")
    _says_nothing_but_its_code(_gate(hearth_home), BUNDLE_REFUSED)
    assert installs == []


@pytest.mark.parametrize(
    ("claim", "check"),
    [
        ({"fab_version": "../../../../home/someone/project"}, "UNSAFE_ID"),
        ({"fab_id": "acme/.."}, "UNSAFE_ID"),
        ({"fab_version": "0.0.9"}, "MISMATCH"),  # another release installed earlier
        ({"fab_id": "acme/otherapp"}, "MISMATCH"),
    ],
)
def test_a_run_whose_ids_point_elsewhere_is_refused_before_anything_runs(
    monkeypatch, hearth_home, org, installs, fab, claim, check
):
    grant(hearth_home, (Modality.POINTER,))
    _task_input(monkeypatch, fab, _token(org[0], fab), **claim)
    refusal = _refused(hearth_home, _gate(hearth_home))
    assert refusal["check"] == check
    assert installs == []


def test_a_replayed_older_release_is_refused_with_the_reason_kept_at_home(
    monkeypatch, hearth_home, org, installs, fab, governor
):
    grant(hearth_home, (Modality.POINTER,))
    governor.append(Decision(True, ""))
    old, new = _token(org[0], fab, version=1), _token(org[0], fab, version=2)
    _task_input(monkeypatch, fab, new)
    assert _gate(hearth_home).details == "ran"
    _task_input(monkeypatch, fab, old, server_round="4")
    refusal = _refused(hearth_home, _gate(hearth_home))
    assert refusal["check"] == "DOWNGRADE"
    assert "below release 2" in str(refusal["reason"])
    assert installs == ["3"]


def test_an_expired_bundle_is_refused(monkeypatch, hearth_home, org, installs, fab):
    grant(hearth_home, (Modality.POINTER,))
    _task_input(monkeypatch, fab, _token(org[0], fab, valid_days=1, not_before=time.time() - 1e6))
    assert "expired" in str(_refused(hearth_home, _gate(hearth_home))["reason"])
    assert installs == []


def test_a_bundle_signed_by_a_revoked_key_is_refused(monkeypatch, hearth_home, org, installs, fab):
    grant(hearth_home, (Modality.POINTER,))
    public = load_org_key(org[0]).public_key()
    revoked = sign_revocations(load_org_key(org[0]), version=1, revoked=[key_id(public)]).token
    _task_input(monkeypatch, fab, _token(org[0], fab), revocations=revoked)
    assert _refused(hearth_home, _gate(hearth_home))["check"] == "REVOKED"
    assert installs == []


def test_a_busy_laptop_declines_with_the_same_code_and_keeps_its_reason_at_home(
    monkeypatch, hearth_home, org, installs, governor, fab
):
    grant(hearth_home, (Modality.POINTER,))
    governor.append(Decision(False, "on battery"))
    _task_input(monkeypatch, fab, _token(org[0], fab))
    _says_nothing_but_its_code(_gate(hearth_home), UNAVAILABLE)
    assert installs == []
    assert read_deployment(hearth_home)["decline"]["reason"] == "on battery"


def test_an_org_signed_bundle_on_an_idle_laptop_runs_the_devices_app(
    monkeypatch, hearth_home, org, installs, governor, fab
):
    grant(hearth_home, (Modality.POINTER,))
    governor.append(Decision(True, ""))
    _task_input(monkeypatch, fab, _token(org[0], fab))
    assert _gate(hearth_home).details == "ran"
    assert installs == ["3"]


def test_the_governor_decides_once_per_round(
    monkeypatch, hearth_home, org, installs, governor, fab
):
    grant(hearth_home, (Modality.POINTER,))
    governor.extend([Decision(True, ""), Decision(False, "CPU busy")])
    _task_input(monkeypatch, fab, _token(org[0], fab), server_round="3")
    for _ in range(4):  # the four SecAgg+ stages of round 3
        assert _gate(hearth_home).details == "ran"
    _task_input(monkeypatch, fab, _token(org[0], fab), server_round="4")
    assert _error_code(_gate(hearth_home)) == UNAVAILABLE
    assert governor == []


# ---------------------------------------------------------------- no bundle code on the device


def test_a_bundle_that_brings_its_own_client_app_is_refused(
    monkeypatch, tmp_path, hearth_home, org, installs
):
    grant(hearth_home, (Modality.POINTER,))
    own = fab_of(make_app(tmp_path / "own", client_app="acme_client.app:app"))
    _task_input(monkeypatch, own, _token(org[0], own))
    refusal = _refused(hearth_home, _gate(hearth_home))
    assert refusal["check"] == "FOREIGN_CLIENT_APP"
    assert installs == []


def test_a_signed_bundles_code_never_runs_on_the_device(
    monkeypatch, hearth_home, org, governor, fab
):
    # The bundle has a client/learning/app.py of its own that leaves a marker when imported and
    # would leak a canary; the device runs its installed ClientApp instead.
    grant(hearth_home, (Modality.POINTER,))
    governor.append(Decision(True, ""))
    monkeypatch.setattr(runner, "lower_priority", lambda: None)
    _task_input(monkeypatch, fab, _token(org[0], fab))
    message, context, run, content = runner.pull_task_input(None)
    zeros = [np.zeros(s.shape, dtype=np.float32) for s in model_spec(8)]
    fitins = FitIns(ndarrays_to_parameters(zeros), {"round": 3})
    message.content = compat.fitins_to_recorddict(fitins, True)
    monkeypatch.setattr(runner, "pull_task_input", lambda client: (message, context, run, content))
    task = _gate(hearth_home)
    assert task.reply is not None
    assert not (hearth_home / "bundle-imported").exists()
    # The device's own policy check answered (the run names no policy hash); the bundle's
    # app would have replied with its canary.
    assert task.reply.has_error() and task.reply.error.code == POLICY_MISMATCH
    # The ClientApp is the installed hearth's, the runner's own: the same client/ package.
    assert (
        Path(device_app.__file__).resolve().parents[1] == Path(runner.__file__).resolve().parents[1]
    )
    assert runner.device_app is device_app.app


@pytest.mark.parametrize(
    ("said", "sent"), [(UNAVAILABLE, UNAVAILABLE), (987654321, runner.CLIENT_ERROR)]
)
def test_an_error_keeps_only_a_code_a_reply_may_carry(monkeypatch, said, sent):
    def app(message: Message, context: Context) -> Message:
        return Message(Error(said, "the vault says hello"), reply_to=message)

    monkeypatch.setattr(runner, "device_app", app)
    reply = runner.run_device_app(_message(), _context({}))
    assert reply.error.code == sent
    assert reply.error.reason == refusal_reason(sent)


class SecAggGrid:
    """Three devices, each answering SecAgg+ stages through the device's own mods."""

    def __init__(self, train: ClientAppCallable) -> None:
        self.handle = make_ffn(train, device_app.app._mods)
        self.contexts = {
            nid: _context({"secaggplus": True, "context-length": 8}) for nid in (11, 22, 33)
        }

    def send_and_receive(
        self, messages: list[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return [
            self.handle(copy.deepcopy(m), self.contexts[m.metadata.dst_node_id]) for m in messages
        ]


@pytest.mark.parametrize("policy_file", ["small-cohort.toml", "tester_policy.toml"])
def test_a_secaggplus_round_masks_only_what_the_devices_egress_guard_passed(
    hearth_home, monkeypatch, policy_file
):
    # Three devices: not the default's cohort of 800, so the small-cohort policy stands in
    # for it. Under the tester policy (require_secure_aggregation = true) the inner fit
    # message of a secure round must reach training: a device that took it for a plain
    # round would decline every secure round (as a bundle host once made it do).
    policy = hearth_home.parent / policy_file
    policy.write_text(
        small_policy_text()
        if policy_file == "small-cohort.toml"
        else (Path(privacy_package.__file__).parent / policy_file).read_text()
    )
    monkeypatch.setenv("HEARTH_POLICY", str(policy))
    # The device's ClientApp is wrapped in exactly these mods, outermost first.
    assert device_app.app._mods == [
        device_app.secure_aggregation_mod,
        device_app.distributed_noise_mod,
        device_app.egress_guard_mod,
        device_app.refusal_mod,
    ]
    spec = model_spec(8)
    seen: list[list[str]] = []

    def train(message: Message, context: Context) -> Message:  # stands in for DP-SGD
        seen.append(sorted(message.content.keys()))
        update = [np.full(s.shape, 0.001, dtype=np.float32) for s in spec]
        fitres = FitRes(Status(Code.OK, "Success"), ndarrays_to_parameters(update), 1, {})
        return Message(compat.fitres_to_recorddict(fitres, False), reply_to=message)

    grid = SecAggGrid(train)
    legacy = LegacyContext(
        _context({}),
        config=ServerConfig(num_rounds=1),
        strategy=FedAvg(min_fit_clients=3, min_available_clients=3),
        client_manager=SimpleClientManager(),
    )
    for nid in grid.contexts:
        legacy.client_manager.register(GridClientProxy(nid, grid, 1))  # type: ignore[arg-type]
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    start = [np.zeros(s.shape, dtype=np.float32) for s in spec]
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(start), True
    )
    workflow = DropoutTolerantSecAggPlus(
        num_shares=3, reconstruction_threshold=2, max_weight=1.0, clipping_range=8.0
    )
    workflow(grid, legacy)  # type: ignore[arg-type]
    after = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], True)
    # Only the masked-vector stage reached training, once per device; the sum unmasked.
    assert len(seen) == 3
    np.testing.assert_allclose(parameters_to_ndarrays(after)[0], 0.001, atol=1e-4)
    assert len(Device(hearth_home).uploads()) == 3  # each passed the device's guard


def test_the_superexec_secret_is_sent_only_when_join_provides_one(monkeypatch, tmp_path):
    monkeypatch.delenv(runner.ENV_SECRET_FILE, raising=False)
    assert len(runner._superexec_interceptors()) == 1
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    monkeypatch.setenv(runner.ENV_SECRET_FILE, str(secret))
    assert len(runner._superexec_interceptors()) == 2


def test_main_dispatches_task_and_serve(monkeypatch):
    calls: list[tuple[str, ...]] = []

    def run_task(address: str, token: str) -> int:
        calls.append((address, token))
        return 7

    monkeypatch.setattr(runner, "run_task", run_task)
    monkeypatch.setattr(runner, "serve", lambda address: calls.append((address,)))
    assert runner.main(["task", "--runtime-api-address", "127.0.0.1:1", "--token", "t"]) == 7
    assert runner.main(["serve", "--runtime-api-address", "127.0.0.1:2"]) == 0
    assert calls == [("127.0.0.1:1", "t"), ("127.0.0.1:2",)]


def test_a_task_heartbeats_while_it_runs_and_stops_after(monkeypatch, hearth_home):
    # Without heartbeats the SuperNode revokes a task's token after about a minute: a
    # device training longer (20 devices on two cores took 52 s) lost its reply.
    beats: list[float] = []

    class FakeRuntime:
        def SendTaskHeartbeat(self, request: object) -> SimpleNamespace:
            beats.append(time.monotonic())
            return SimpleNamespace(success=True)

        def close(self) -> None:
            pass

    def slow_gate(client: object, home: Path, task: runner._Task) -> None:
        deadline = time.monotonic() + 5
        while not beats and time.monotonic() < deadline:
            time.sleep(0.01)
        task.exit_code = 0

    monkeypatch.setattr(runner, "_runtime_client", lambda address, interceptors: FakeRuntime())
    monkeypatch.setattr(runner, "_run_gated", slow_gate)
    monkeypatch.setattr(runner, "push_task_output", lambda **kwargs: None)
    before = {t.ident for t in threading.enumerate()}
    assert runner.run_task("127.0.0.1:1", "token") == 0
    assert beats, "no heartbeat while the task ran"
    assert {t.ident for t in threading.enumerate()} <= before  # the sender stopped
