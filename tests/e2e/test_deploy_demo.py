"""`make deploy-demo` once, with one round: what the ML engineer following README sees.

Real processes on 127.0.0.1 (`hearth-server up`, two `hearth join` laptops, `flwr run`
through `hearth-server campaign run`). One round keeps it to the suite's budget; the
demo's own default is three.
"""

from __future__ import annotations

import json

import pytest

from simulations.deploy_demo import DeployDemoSettings, run_deploy_demo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_the_deployment_walkthrough_trains_both_laptops_and_says_so(tmp_path):
    lines: list[str] = []
    result = run_deploy_demo(
        DeployDemoSettings(root=tmp_path / "demo", rounds=1, hours=0.5), lines.append
    )
    shown = "\n".join(lines)

    assert result.campaign_exit == 0, shown
    # Each laptop received exactly three files of the PKI, plus the signed policy.
    assert "it received alice-laptop.key, ca.crt, org-signing.pub, tester_policy.toml" in shown
    assert "bob-laptop.key" not in shown.split("# On alice-laptop")[1].split("# On bob")[0]
    assert result.data_summary.startswith("SYNTHETIC DATA")
    assert "round 1: 2 of 2 sampled devices trained (0 unavailable" in result.campaign
    assert "1 of 1 rounds aggregated" in result.campaign
    assert "Policy hash" in result.audit or "policy" in result.audit.lower()
    [outcome] = [
        json.loads(line)
        for line in (result.checkpoints / "round-outcomes.jsonl").read_text().splitlines()
    ]
    assert outcome["aggregated"] is True and outcome["clients_trained"] == 2
    assert (result.checkpoints / "round-0001.npz").is_file()
    print(f"deploy demo, 1 round: {result.seconds:.0f}s")  # the lead tracks the suite budget
