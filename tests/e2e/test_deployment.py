"""One SuperLink and five SuperNodes on 127.0.0.1, with TLS, SuperNode auth, signed bundles."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from privacy.policy import load_policy
from server.app import build_strategy
from server.checkpoints import load_checkpoint
from server.config import CampaignConfig
from server.pki import add_device, init_pki
from server.signing import build_bundle, generate_org_key, load_org_key, sign_bundle
from simulations.flwr_runner import PROJECT_ROOT, free_port
from tests.e2e.deploy_harness import (
    BIN,
    CANARY,
    Process,
    TlsTap,
    base_env,
    deployment,
    relaxed_policy,
    run,
    seed_device,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DEVICES = 5


@dataclass
class Federation:
    root: Path
    pki: Path
    state: Path
    policy: Path
    env: dict[str, str]
    port: int
    tap: TlsTap
    homes: list[Path]
    joins: list[Process]

    def flwr_run(self, token: str, checkpoints: Path, rounds: int, timeout: float) -> str:
        overrides = (
            f"num-server-rounds={rounds} max-steps=2 batch-size=32 secaggplus=true "
            f"round-timeout=45.0 checkpoint-dir='{checkpoints}' policy-file='{self.policy}' "
            f"bundle-signature='{token}'"
        )
        env = {**self.env, "FLWR_HOME": str(self.state / "flwr")}
        command = [str(BIN / "flwr"), "run", str(PROJECT_ROOT), "hearth", "--stream"]
        return run([*command, "--run-config", overrides], env, timeout=timeout)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("deploy")
    pki = init_pki(root / "pki").root
    generate_org_key(pki)
    for i in range(DEVICES):
        add_device(pki, f"d{i}")
    policy = relaxed_policy(root / "policy.toml")
    env = base_env(policy)
    port = free_port()
    state = root / "state"
    up = Process.start(
        [
            str(BIN / "hearth-server"),
            "up",
            "--pki",
            str(pki),
            "--state",
            str(state),
            "--port",
            str(port),
        ],
        {**env, "HEARTH_HOME": str(root / "server-home")},
        root / "up.log",
    )
    wait_for(lambda: f"device d{DEVICES - 1}:" in (root / "up.log").read_text(), 90, "up")
    homes: list[Path] = []
    joins: list[Process] = []
    try:
        tap = TlsTap(port, pki / "superlink.crt", pki / "superlink.key", pki / "ca.crt").start()
        for i in range(DEVICES):
            home = root / f"home-{i}"
            seed_device(home, i)
            homes.append(home)
            joins.append(
                Process.start(
                    [
                        str(BIN / "hearth"),
                        "join",
                        "--superlink",
                        f"127.0.0.1:{tap.port}",
                        "--root-cert",
                        str(pki / "ca.crt"),
                        "--key",
                        str(pki / "devices" / f"d{i}.key"),
                        "--org-key",
                        str(pki / "org-signing.pub"),
                    ],
                    {**env, "HEARTH_HOME": str(home)},
                    root / f"join-{i}.log",
                )
            )
        wait_for(
            lambda: all(
                "SuperNode ID" in (root / f"join-{i}.log").read_text() for i in range(DEVICES)
            ),
            90,
            "all SuperNodes connected",
        )
        yield Federation(root, pki, state, policy, env, port, tap, homes, joins)
    finally:
        for process in joins:
            process.kill(signal.SIGTERM)
        up.kill(signal.SIGTERM)


def _token(federation: Federation, key: Path) -> str:
    return sign_bundle(build_bundle(PROJECT_ROOT), load_org_key(key)).token


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


def test_a_secaggplus_round_completes_with_the_survivors_when_a_device_is_killed(
    federation: Federation,
) -> None:
    checkpoints = federation.root / "campaign"
    token = _token(federation, federation.pki / "org-signing.key")
    victim = federation.homes[-1]
    killer_done: list[bool] = []

    def kill_mid_round() -> None:
        wait_for(lambda: "governor" in deployment(victim), 240, "round 1 to reach the device")
        federation.joins[-1].kill()
        killer_done.append(True)

    threading.Thread(target=kill_mid_round, daemon=True).start()
    log = federation.flwr_run(token, checkpoints, rounds=2, timeout=420)
    assert killer_done, log[-3000:]
    # The round in which the device dies still updates the model from the survivors.
    first = json.loads((checkpoints / "round-0001.json").read_text())
    assert first["fit"].get("clients_trained", 0) >= 2, log[-3000:]
    assert "skipped" not in first["fit"]
    initial = build_strategy(CampaignConfig(), load_policy(federation.policy), 0).inner
    after = load_checkpoint(checkpoints / "round-0001.npz")
    assert any(
        not np.array_equal(a, b) for a, b in zip(initial.global_arrays, after.values(), strict=True)
    )
    last = json.loads((checkpoints / "round-0002.json").read_text())
    assert last["fit"]["clients_trained"] >= 2
    # No byte any device sent (after its egress guard, decrypted at the relay) holds the canary.
    sent = bytes(federation.tap.sent)
    assert len(sent) > 10_000
    assert CANARY.encode() not in sent


def test_a_bundle_signed_by_another_key_is_refused_and_shown_in_status(
    federation: Federation,
) -> None:
    other, _ = generate_org_key(federation.root / "other-org")
    before = [deployment(home).get("round") for home in federation.homes[:-1]]
    federation.flwr_run(_token(federation, other), federation.root / "foreign", 1, timeout=240)
    for home, previous in zip(federation.homes[:-1], before, strict=True):
        record = deployment(home)
        assert "signed by another key" in str(record["refusal"])
        assert record.get("round") == previous  # no ClientApp code ran
        status = run(
            [str(BIN / "hearth"), "status", "--json"],
            {**federation.env, "HEARTH_HOME": str(home)},
        )
        report = json.loads(status[status.index("{") :])
        assert "signed by another key" in report["deployment"]["last_refusal"]["reason"]
