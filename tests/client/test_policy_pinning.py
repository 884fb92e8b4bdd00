"""The pinned policy: signed by the org key, consented to, the only one a round runs under."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.control.consent import consent_path, grant, load_consent
from client.control.participation import admit, consent_problem, read_deployment
from client.control.policy_pin import (
    PolicyRefused,
    device_policy,
    load_pinned,
    pin_policy,
    pinned_policy_path,
    verify_policy,
)
from client.dashboard.snapshot import snapshot
from client.deployment.bundle_trust import (
    BundleRefused,
    load_public_key,
    pin_org_key,
    verify_bundle,
)
from client.deployment.join import JoinConfig, JoinError, prepare
from client.deployment.runner import _governor_once_per_round
from client.learning.app import Declined, HearthClient
from client.learning.device import Device
from client.storage.vault import Vault
from policy.events import Modality
from policy.model import NextActionPolicy, get_arrays
from policy.replies import POLICY_MISMATCH, TRAIN_WEIGHT, UNAVAILABLE
from policy.signed_bundle import MANIFEST_TAG as BUNDLE_TAG
from policy.signed_policy import DOMAIN_TAG
from privacy.policy import load_policy, parse_policy, policy_hash
from server.cli import app as server_app
from server.policy_signing import sign_policy
from server.signing import build_bundle, generate_org_key, load_org_key, sign_bundle
from simulations.flwr_runner import PROJECT_ROOT
from simulations.generator import generate_employee
from tests.server.fakes import small_policy_text

MODALITIES = (Modality.POINTER, Modality.KEYS, Modality.APPS)


@pytest.fixture
def org(tmp_path, hearth_home):
    """The org's key pair, with the public key pinned on this device."""
    private, public = generate_org_key(tmp_path / "pki")
    pin_org_key(hearth_home, public)
    return load_org_key(private)


def _policy_file(path, **settings):
    """The small-cohort policy (cohort 2) with ``key = value`` lines replaced."""
    text = small_policy_text()
    for key, value in settings.items():
        lines = [line for line in text.splitlines() if line.startswith(f"{key} = ")]
        assert len(lines) == 1, key
        text = text.replace(lines[0], f"{key} = {value}")
    path.write_text(text)
    return path


def _signed(path, key):
    return sign_policy(path.read_bytes(), key).token


def _pin(home, path, key):
    return pin_policy(home, path, _signed(path, key))


def _params():
    return list(get_arrays(NextActionPolicy()).values())


def _config(policy, **extra):
    return {"round": 1, "policy-hash": policy_hash(policy), **extra}


def _with_data(home):
    with Vault.open(home / "vault") as vault:
        vault.append(generate_employee(0, seed=3, hours=1))
    return Device(home)


def _declined(call):
    with pytest.raises(Declined) as refused:
        call()
    return refused.value.code


def test_a_policy_signed_by_the_org_is_pinned_and_is_the_devices_policy(
    hearth_home, org, tmp_path, monkeypatch
):
    agreed = _policy_file(tmp_path / "agreed.toml", min_cohort=4)
    pinned, previous = _pin(hearth_home, agreed, org)
    assert previous is None
    assert pinned.policy.training.min_cohort == 4
    assert pinned_policy_path(hearth_home).read_bytes() == agreed.read_bytes()
    # Neither HEARTH_POLICY nor the shipped default overrides the pinned policy.
    monkeypatch.setenv("HEARTH_POLICY", str(_policy_file(tmp_path / "env.toml", min_cohort=9)))
    assert Device(hearth_home).policy().training.min_cohort == 4
    assert device_policy(hearth_home) == pinned.policy


def test_without_a_pinned_policy_a_laptop_follows_hearth_policy_or_the_default(hearth_home):
    assert load_pinned(hearth_home) is None
    assert Device(hearth_home).policy() == load_policy()


def test_a_signature_by_another_key_does_not_pin(hearth_home, org, tmp_path):
    stranger, _ = generate_org_key(tmp_path / "stranger")
    agreed = _policy_file(tmp_path / "agreed.toml")
    with pytest.raises(PolicyRefused, match="not the organisation's key"):
        _pin(hearth_home, agreed, load_org_key(stranger))
    assert not pinned_policy_path(hearth_home).exists()


def test_a_signature_of_another_policy_file_does_not_pin(hearth_home, org, tmp_path):
    signed = _policy_file(tmp_path / "signed.toml", min_cohort=3)
    other = _policy_file(tmp_path / "other.toml", min_cohort=30)
    with pytest.raises(PolicyRefused, match="not what the organisation signed"):
        pin_policy(hearth_home, other, _signed(signed, org))
    assert load_pinned(hearth_home) is None


def test_a_policy_cannot_be_pinned_before_the_org_key(hearth_home, tmp_path):
    private, _ = generate_org_key(tmp_path / "pki")
    agreed = _policy_file(tmp_path / "agreed.toml")
    with pytest.raises(PolicyRefused, match="no organisation key pinned"):
        _pin(hearth_home, agreed, load_org_key(private))


def test_a_policy_signature_is_not_a_bundle_signature_nor_the_reverse(org, tmp_path):
    agreed = _policy_file(tmp_path / "agreed.toml")
    text = agreed.read_bytes()
    public = org.public_key()
    # The same bytes signed as a bundle do not verify as a policy, and the reverse.
    with pytest.raises(PolicyRefused):
        bundle_token = sign_bundle(build_bundle(PROJECT_ROOT), org, version=1).token
        verify_policy(text, bundle_token, public)
    with pytest.raises(BundleRefused):
        verify_bundle(text, sign_policy(text, org).token, public)
    assert DOMAIN_TAG != BUNDLE_TAG


def test_an_invalid_policy_is_not_signed(org, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(small_policy_text().replace("min_cohort = 2", "min_cohort = 0"))
    result = CliRunner().invoke(
        server_app, ["sign-policy", str(bad), "--key", str(tmp_path / "pki" / "org-signing.key")]
    )
    assert result.exit_code == 1
    assert "training.min_cohort" in result.output
    assert not (tmp_path / "bad.toml.sig").exists()


def test_hearth_server_sign_policy_writes_the_token_a_device_pins(hearth_home, org, tmp_path):
    agreed = _policy_file(tmp_path / "agreed.toml", min_cohort=5)
    result = CliRunner().invoke(
        server_app,
        ["sign-policy", str(agreed), "--key", str(tmp_path / "pki" / "org-signing.key")],
    )
    assert result.exit_code == 0, result.output
    token = (tmp_path / "agreed.toml.sig").read_text().strip()
    assert policy_hash(load_policy(agreed)) in result.output
    pinned, _ = pin_policy(hearth_home, agreed, token)
    assert pinned.policy.training.min_cohort == 5


def test_a_pinned_policy_changed_on_disk_is_refused_not_trusted(hearth_home, org, tmp_path):
    _pin(hearth_home, _policy_file(tmp_path / "agreed.toml"), org)
    path = pinned_policy_path(hearth_home)
    path.write_text(path.read_text().replace("min_cohort = 2", "min_cohort = 1"))
    with pytest.raises(PolicyRefused, match="not what the organisation signed"):
        load_pinned(hearth_home)
    grant(hearth_home, MODALITIES, load_policy(path))
    assert "not what the organisation signed" in admit(hearth_home).reason


def test_consent_records_the_policy_it_was_given_under(hearth_home, org, tmp_path):
    pinned, _ = _pin(hearth_home, _policy_file(tmp_path / "agreed.toml"), org)
    record = grant(hearth_home, MODALITIES)
    assert record.policy_hash == pinned.policy_hash
    assert load_consent(hearth_home) == record
    assert record.covers(pinned.policy)
    assert admit(hearth_home).allowed


def test_consent_under_policy_a_does_not_admit_a_round_under_pinned_policy_b(
    hearth_home, org, tmp_path
):
    _pin(hearth_home, _policy_file(tmp_path / "a.toml", min_cohort=2), org)
    device = _with_data(hearth_home)
    grant(hearth_home, MODALITIES)
    policy_b, _ = _pin(hearth_home, _policy_file(tmp_path / "b.toml", min_cohort=3), org)
    assert "no consent to the pinned policy" in admit(hearth_home).reason
    client = HearthClient(device)
    assert _declined(lambda: client.fit(_params(), _config(policy_b.policy))) == UNAVAILABLE
    assert device.ledger().entries == []
    # Consent again, under B: now B's rounds run.
    grant(hearth_home, MODALITIES)
    _, weight, _ = client.fit(_params(), _config(policy_b.policy))
    assert weight == TRAIN_WEIGHT


def test_a_consent_record_from_before_pinning_does_not_cover_the_pinned_policy(
    hearth_home, org, tmp_path
):
    grant(hearth_home, MODALITIES)
    data = json.loads(consent_path(hearth_home).read_text())
    del data["policy_hash"], data["policy"]
    consent_path(hearth_home).write_text(json.dumps(data))
    assert admit(hearth_home).allowed  # nothing pinned yet: a laptop that never joined
    _pin(hearth_home, _policy_file(tmp_path / "agreed.toml"), org)
    assert "no consent to the pinned policy" in str(consent_problem(hearth_home))


def test_a_round_under_another_policy_than_the_pinned_one_is_refused_and_recorded(
    hearth_home, org, tmp_path
):
    pinned, _ = _pin(hearth_home, _policy_file(tmp_path / "agreed.toml"), org)
    device = _with_data(hearth_home)
    grant(hearth_home, MODALITIES)
    client = HearthClient(device)
    # The bundle's default (or any policy the server picks) is not the pinned one.
    other = parse_policy(small_policy_text().replace("min_cohort = 2", "min_cohort = 1"))
    assert _declined(lambda: client.fit(_params(), _config(other))) == POLICY_MISMATCH
    assert _declined(lambda: client.evaluate(_params(), _config(other))) == POLICY_MISMATCH
    assert device.ledger().entries == []
    reason = read_deployment(hearth_home)["refusal"]["reason"]
    assert "policy mismatch" in reason and pinned.policy_hash[:12] in reason
    delta, _, _ = client.fit(_params(), _config(pinned.policy))
    assert any(np.abs(d).sum() > 0 for d in delta)


def test_the_runners_governor_reads_the_pinned_policy_not_hearth_policy(
    hearth_home, org, tmp_path, monkeypatch
):
    relaxed = {
        "idle_seconds": 0,
        "max_cpu_percent": 100.0,
        "require_mains_power": "false",
    }
    strict = _policy_file(tmp_path / "strict.toml", **relaxed)  # unknown metering declines
    monkeypatch.setenv("HEARTH_POLICY", str(strict))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no busctl, no gdbus: unknown
    assert "metering unknown" in str(_governor_once_per_round(hearth_home, 1, "1"))
    _pin(
        hearth_home,
        _policy_file(tmp_path / "pinned.toml", **relaxed, allow_unknown_metering="true"),
        org,
    )
    assert _governor_once_per_round(hearth_home, 1, "2") is None


def _join_config(tmp_path, home, **extra):
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    return JoinConfig("127.0.0.1:1", cert, cert, home, **extra)


def test_join_refuses_without_a_pinned_policy(hearth_home, org, tmp_path):
    grant(hearth_home, MODALITIES)
    with pytest.raises(JoinError, match="no privacy policy pinned"):
        prepare(_join_config(tmp_path, hearth_home))
    agreed = _policy_file(tmp_path / "agreed.toml")
    with pytest.raises(JoinError, match="--policy-signature"):
        prepare(_join_config(tmp_path, hearth_home, policy=agreed))


def test_join_pins_the_policy_then_needs_consent_to_it(hearth_home, org, tmp_path):
    grant(hearth_home, MODALITIES)  # under the shipped default, before joining
    agreed = _policy_file(tmp_path / "agreed.toml", min_cohort=3)
    config = _join_config(
        tmp_path, hearth_home, policy=agreed, policy_signature=_signed(agreed, org)
    )
    with pytest.raises(JoinError, match="no consent to the pinned policy"):
        prepare(config)
    assert load_pinned(hearth_home).policy.training.min_cohort == 3
    assert read_deployment(hearth_home)["join"]["joined"] is False
    grant(hearth_home, MODALITIES)
    port, secret = prepare(config)
    assert port > 0 and secret.is_file()


def test_hearth_join_with_a_foreign_policy_signature_does_not_join(hearth_home, org, tmp_path):
    stranger, _ = generate_org_key(tmp_path / "stranger")
    agreed = _policy_file(tmp_path / "agreed.toml")
    sig = tmp_path / "agreed.toml.sig"
    sig.write_text(_signed(agreed, load_org_key(stranger)))
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    result = CliRunner().invoke(
        app,
        [
            "join",
            "--superlink",
            "127.0.0.1:1",
            "--root-cert",
            str(cert),
            "--key",
            str(cert),
            "--policy",
            str(agreed),
            "--policy-signature",
            str(sig),
        ],
    )
    assert result.exit_code == 1
    assert "policy refused" in result.output
    assert load_pinned(hearth_home) is None


def test_policy_accept_pins_a_new_policy_and_consent_show_says_what_changed(
    hearth_home, org, tmp_path
):
    _pin(hearth_home, _policy_file(tmp_path / "a.toml"), org)
    grant(hearth_home, MODALITIES)
    runner = CliRunner()
    shown = runner.invoke(app, ["consent", "show"])
    assert "under this policy" in shown.output
    new = _policy_file(tmp_path / "b.toml", min_cohort=6, retention_days=30)
    accepted = runner.invoke(app, ["policy", "accept", str(new), "--signature", _signed(new, org)])
    assert accepted.exit_code == 0, accepted.output
    assert "training.min_cohort: 2 -> 6" in accepted.output
    assert "until you consent" in accepted.output
    assert not admit(hearth_home).allowed
    shown = runner.invoke(app, ["consent", "show"]).output
    assert "takes part in no round until you run `hearth consent grant`" in shown
    assert "training.min_cohort: 2 -> 6" in shown
    assert "data.retention_days: 14.0 -> 30.0" in shown
    status = runner.invoke(app, ["status"]).output
    assert "rounds: no consent to the pinned policy" in status
    granted = runner.invoke(app, ["consent", "grant", "--modalities", "pointer,keys", "--yes"])
    assert granted.exit_code == 0, granted.output
    assert admit(hearth_home).allowed
    assert "under this policy" in runner.invoke(app, ["consent", "show"]).output


def test_policy_accept_refuses_a_foreign_signature_and_keeps_the_pinned_policy(
    hearth_home, org, tmp_path
):
    pinned, _ = _pin(hearth_home, _policy_file(tmp_path / "a.toml"), org)
    stranger, _ = generate_org_key(tmp_path / "stranger")
    new = _policy_file(tmp_path / "b.toml", min_cohort=6)
    result = CliRunner().invoke(
        app, ["policy", "accept", str(new), "--signature", _signed(new, load_org_key(stranger))]
    )
    assert result.exit_code == 1
    assert load_pinned(hearth_home).policy_hash == pinned.policy_hash
    assert load_public_key(tmp_path / "pki" / "org-signing.pub")  # the org key is unchanged


def test_policy_show_names_the_pinned_policy(hearth_home, org, tmp_path):
    runner = CliRunner()
    assert "No policy pinned" in runner.invoke(app, ["policy", "show"]).output
    pinned, _ = _pin(hearth_home, _policy_file(tmp_path / "a.toml"), org)
    assert pinned.policy_hash in runner.invoke(app, ["policy", "show"]).output


def test_the_employees_budget_and_dashboard_read_the_pinned_policy(hearth_home, org, tmp_path):
    agreed = _policy_file(tmp_path / "agreed.toml", device_epsilon_cap="7.0")
    _pin(hearth_home, agreed, org)
    shown = CliRunner().invoke(app, ["budget", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["policy_cap"] == 7.0  # not the shipped default's 10
    lines = snapshot(hearth_home)["policy"]["lines"]
    assert f"Policy hash: {policy_hash(load_policy(agreed))}" in lines
