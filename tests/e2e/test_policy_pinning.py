"""The policy a laptop pinned at `hearth join` is the only one its rounds run under, for real.

One SuperLink and three SuperNodes on 127.0.0.1 (``simulations.deployment``): every
device joins with the federation's policy, signed by the organisation. A server that
runs a signed bundle under another policy, or a plain round under a policy that
requires SecAgg+, is refused by every device, and each device's own record says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.control.consent import grant
from client.control.policy_pin import load_pinned, pin_policy
from client.learning.device import Device
from policy.events import Modality
from privacy.policy import load_policy, policy_hash
from server.checkpoints import read_round_outcomes
from simulations.deployment import PASSPHRASE, Federation, deployment, federation

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
DEVICES = 3
MODALITIES = (Modality.POINTER, Modality.KEYS, Modality.APPS, Modality.TEXT)


@pytest.fixture(scope="module", name="federation")
def _federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("pinning"), DEVICES, keep_sent=False) as fed:
        yield fed


def _variant(fed: Federation, name: str, old: str, new: str) -> Path:
    """The federation's policy with one setting changed."""
    text = fed.policy.read_text()
    assert old in text
    path = fed.root / name
    path.write_text(text.replace(old, new))
    return path


def _run(fed: Federation, name: str, policy: Path, secaggplus: bool) -> dict[str, object]:
    """One round under ``policy``; what the server recorded of its training stage.

    A round that aggregates nothing has no checkpoint or evaluation, only its outcome
    (counts of what the devices answered) in ``round-outcomes.jsonl``.
    """
    checkpoints = fed.root / name
    log = fed.flwr_run(
        {
            "num-server-rounds": 1,
            "secaggplus": secaggplus,
            "round-timeout": 90.0,
            "checkpoint-dir": str(checkpoints),
            "policy-file": str(policy),
            "bundle-signature": fed.token(),
        },
        timeout=240,
    )
    outcomes = read_round_outcomes(checkpoints)
    assert len(outcomes) == 1, log[-3000:]
    assert not (checkpoints / "round-0001.json").exists()  # nothing aggregated, nothing saved
    return outcomes[0]


def _ledger_entries(home: Path) -> int:
    return len(Device(home, PASSPHRASE).ledger().entries)


def _uploads(home: Path) -> int:
    """Model updates that left the device (its upload history)."""
    return len(Device(home, PASSPHRASE).uploads())


def test_a_bundle_run_under_another_policy_than_the_pinned_one_is_refused(
    federation: Federation,
) -> None:
    pinned = policy_hash(load_policy(federation.policy))
    assert all(load_pinned(home).policy_hash == pinned for home in federation.homes)  # type: ignore[union-attr]
    other = _variant(federation, "other.toml", "min_cohort = 2", "min_cohort = 3")
    row = _run(federation, "other-policy", other, secaggplus=False)
    assert row["clients_policy_mismatch"] == DEVICES
    assert row["clients_trained"] == 0 and row["aggregated"] is False
    for home in federation.homes:
        reason = str(deployment(home)["refusal"]["reason"])  # type: ignore[index]
        assert "policy mismatch" in reason and pinned[:12] in reason
        assert _ledger_entries(home) == 0  # refused before training or evaluating
        assert _uploads(home) == 0


def test_a_plain_round_under_a_policy_requiring_secaggplus_is_refused(
    federation: Federation,
) -> None:
    requiring = _variant(
        federation,
        "requires-secagg.toml",
        "require_secure_aggregation = false",
        "require_secure_aggregation = true",
    )
    for home in federation.homes:  # the employee accepts the new policy and consents again
        pinned, _ = pin_policy(home, requiring, federation.policy_signature(requiring))
        grant(home, MODALITIES, pinned.policy)
    row = _run(federation, "plain-under-secagg", requiring, secaggplus=False)
    assert row["clients_policy_mismatch"] == DEVICES
    assert row["clients_trained"] == 0 and row["aggregated"] is False
    for home in federation.homes:
        reason = str(deployment(home)["refusal"]["reason"])  # type: ignore[index]
        assert "plain round (no SecAgg+) under a policy that requires SecAgg+" in reason
        assert _uploads(home) == 0  # no update left it
