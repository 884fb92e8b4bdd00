"""A real round through the zygote: devices forked from one preloaded interpreter train,
one task of the fleet at a time."""

from __future__ import annotations

import json

import psutil
import pytest

from client.deployment.zygote_client import children
from simulations.deployment import CANARY, deployment, federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
DEVICES = 2


def test_a_secaggplus_round_with_every_device_process_forked_by_the_zygote(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("zy")
    # One task slot for the fleet: every stage of SecAgg+ still completes, a task at a time.
    with federation(
        root, DEVICES, keep_sent=True, device_epsilon_cap=1000.0, zygote=True, task_slots=1
    ) as fed:
        assert fed.zygote is not None and fed.zygote_socket is not None
        zygote = psutil.Process(fed.zygote.proc.pid)
        # Each device's `hearth join` and its SuperNode are the zygote's children, by home.
        running = children(fed.zygote_socket)
        homes = {str(h) for h in fed.homes}
        assert {c.home for c in running} == homes
        assert {c.module for c in running} == {
            "client.cli",
            "client.deployment.supernode",
        }
        assert {c.pid for c in running} <= {p.pid for p in zygote.children()}
        checkpoints = fed.root / "checkpoints"
        log = fed.flwr_run(
            {
                "num-server-rounds": 1,
                "secaggplus": True,
                "round-timeout": 90.0,
                "checkpoint-dir": str(checkpoints),
                "policy-file": str(fed.policy),
                "bundle-signature": fed.token(),
            },
            timeout=240,
        )
        fit = json.loads((checkpoints / "round-0001.json").read_text())["fit"]
        assert fit.get("clients_trained", 0) == DEVICES, log[-3000:]
        # The tasks ran behind the same gate as fresh ones: each device recorded its round.
        for home in fed.homes:
            assert "round" in deployment(home), fed.device_outcomes()
        assert CANARY.encode() not in bytes(fed.tap.sent)
    # Everything forked for the fleet has ended with it: no process is left behind.
    assert not zygote.is_running() or zygote.status() == psutil.STATUS_ZOMBIE
    assert not any(psutil.pid_exists(c.pid) for c in running)
