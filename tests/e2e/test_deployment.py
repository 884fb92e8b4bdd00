"""One SuperLink and five SuperNodes on 127.0.0.1, with TLS, SuperNode auth, signed bundles."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.learning.device import Device
from policy.model_version import model_version
from privacy.policy import load_policy
from server.app import build_strategy
from server.checkpoints import load_checkpoint
from server.config import CampaignConfig
from server.pki import add_device, init_pki
from server.signing import generate_org_key
from simulations.deployment import (
    BIN,
    CANARY,
    PASSPHRASE,
    Federation,
    deployment,
    federation,
    run,
    wait_for,
)
from simulations.flwr_runner import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DEVICES = 5
DELTA = load_policy().privacy.delta


def _overrides(token: str, checkpoints: Path, rounds: int, policy: Path) -> dict[str, object]:
    return {
        "num-server-rounds": rounds,
        "secaggplus": True,
        "round-timeout": 90.0,  # a first message on a loaded CI box: bundle install, fresh runner
        "checkpoint-dir": str(checkpoints),
        "policy-file": str(policy),
        "bundle-signature": token,
    }


@pytest.fixture(scope="module", name="federation")
def _federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    # These campaigns test the protocol; a cap that lasts them all (budgets: tests/privacy).
    with federation(tmp_path_factory.mktemp("deploy"), DEVICES, device_epsilon_cap=1000.0) as fed:
        yield fed


def test_an_unregistered_device_key_is_refused(federation: Federation) -> None:
    stranger = init_pki(federation.root / "stranger-pki").root
    key, _ = add_device(stranger, "stranger")
    output = run(
        [
            str(BIN / "flower-supernode"),
            "--superlink",
            f"127.0.0.1:{federation.port}",
            "--root-certificates",
            str(federation.pki / "ca.crt"),
            "--auth-supernode-private-key",
            str(key),
            "--isolation",
            "process",
            "--port",
            str(free_port()),
            "--max-retries",
            "1",
        ],
        federation.env,
        timeout=90,
    )
    assert "SuperNode ID" not in output
    assert "Exit Code" in output


def test_a_killed_device_a_superlink_restart_and_a_laptop_back_online(
    federation: Federation,
) -> None:
    """One campaign of two SecAgg+ rounds with everything that goes wrong in between.

    Round 1: a device is killed mid-round; the survivors still update the model.
    Then the SuperLink restarts and the killed laptop comes back online; the same
    campaign, run again, resumes at round 2, and the returning laptop trains from
    round 1's model (the one the others made while it was away), not its last one.
    """
    checkpoints = federation.root / "campaign"
    token = federation.token()
    laptop = len(federation.homes) - 1
    victim = federation.homes[laptop]
    killer_done: list[bool] = []

    def kill_mid_round() -> None:
        wait_for(lambda: "governor" in deployment(victim), 240, "round 1 to reach the device")
        federation.joins[laptop].kill()
        killer_done.append(True)

    threading.Thread(target=kill_mid_round, daemon=True).start()
    overrides = _overrides(token, checkpoints, 1, federation.policy)
    log = federation.flwr_run(overrides, timeout=420)
    assert killer_done, log[-3000:]
    # The SecAgg+ round in which the device dies still updates the model from the survivors.
    first = (checkpoints / "round-0001.json").read_text()
    fit = json.loads(first)["fit"]
    assert fit.get("clients_trained", 0) >= 2, log[-3000:]
    assert "skipped" not in fit
    initial = build_strategy(CampaignConfig(), load_policy(federation.policy), 0).inner
    after = load_checkpoint(checkpoints / "round-0001.npz")
    assert any(
        not np.array_equal(a, b) for a, b in zip(initial.global_arrays, after.values(), strict=True)
    )
    version_1 = json.loads(first)["model_version"]
    assert version_1 == model_version(after.values())
    device = Device(victim, PASSPHRASE, federation.policy)
    uploaded, spent = len(device.uploads()), device.ledger().recorded_spend()

    # The SuperLink restarts and the laptop is back; the campaign resumes at round 2.
    federation.restart_superlink()
    federation.rejoin(laptop)
    log = federation.flwr_run({**overrides, "num-server-rounds": 2, "resume": True}, 420)
    assert "resumes after round 1" in log, log[-3000:]
    assert (checkpoints / "round-0001.json").read_text() == first
    second = json.loads((checkpoints / "round-0002.json").read_text())
    assert second["fit"]["clients_trained"] >= 2, log[-3000:]
    assert not (checkpoints / "round-0003.json").exists()
    new = device.uploads()[uploaded:]
    assert [u["model_version"] for u in new] == [version_1], log[-3000:]
    assert device.ledger().recorded_spend() > spent  # it trained, not just replied
    # No byte any device sent (after its egress guard, decrypted at the relay) holds the canary.
    sent = bytes(federation.tap.sent)
    assert len(sent) > 10_000
    assert CANARY.encode() not in sent


def test_a_bundle_signed_by_another_key_never_reaches_a_device(
    federation: Federation,
) -> None:
    # The SuperLink's ServerApp gate refuses the run before anything is sent; the
    # device's own refusal of such a bundle (a SuperLink that skips the gate) is in
    # tests/client/test_runner.py and tests/e2e/test_trust_chain.py.
    other, _ = generate_org_key(federation.root / "other-org")
    online = [h for h, j in zip(federation.homes, federation.joins, strict=True) if j.running]
    assert len(online) == DEVICES
    before = [deployment(home) for home in online]
    token = federation.token(other)
    log = federation.flwr_run(
        _overrides(token, federation.root / "foreign", 1, federation.policy), 240
    )
    assert not (federation.root / "foreign" / "round-0001.json").exists(), log[-3000:]
    for home, previous in zip(online, before, strict=True):
        record = deployment(home)
        assert record.get("round") == previous.get("round")  # no ClientApp code ran
        assert record.get("refusal") == previous.get("refusal")  # no message reached it
