from typer.testing import CliRunner

from client.cli.main import app
from client.control.consent import Modality, grant
from client.control.participation import admit, read_deployment, record
from client.control.pause import pause
from client.control.status import status_report
from client.deployment.governor import Governor
from client.deployment.metering import Metering
from privacy.policy import GovernorSection, default_policy_text
from server.policy_signing import sign_policy
from server.signing import generate_org_key, load_org_key


def _governor(
    idle=1000.0,
    mains=True,
    cpu=5.0,
    require_mains=True,
    metering=Metering.UNMETERED,
    allow_unknown=False,
):
    settings = GovernorSection(
        idle_seconds=300,
        max_cpu_percent=30.0,
        require_mains_power=require_mains,
        allow_unknown_metering=allow_unknown,
    )
    return Governor(
        settings,
        idle=lambda: idle,
        mains=lambda: mains,
        cpu=lambda: cpu,
        metering=lambda: metering,
    )


def test_governor_trains_when_idle_on_mains_and_quiet():
    assert _governor().decide().allowed


def test_governor_declines_when_the_employee_is_active():
    decision = _governor(idle=12).decide()
    assert not decision.allowed
    assert "not idle" in decision.reason


def test_governor_declines_on_battery_unless_the_policy_allows_it():
    assert "battery" in _governor(mains=False).decide().reason
    assert _governor(mains=False, require_mains=False).decide().allowed


def test_governor_declines_when_the_cpu_is_busy():
    assert "CPU busy" in _governor(cpu=85).decide().reason


def test_governor_declines_on_a_metered_network_even_when_unknown_is_allowed():
    decision = _governor(metering=Metering.METERED, allow_unknown=True).decide()
    assert not decision.allowed
    assert "metered network" in decision.reason


def test_unknown_metering_counts_as_metered_unless_the_policy_allows_it():
    decision = _governor(metering=Metering.UNKNOWN).decide()
    assert not decision.allowed
    assert "metering unknown" in decision.reason and "counts as metered" in decision.reason
    assert _governor(metering=Metering.UNKNOWN, allow_unknown=True).decide().allowed


def test_no_consent_means_no_participation(hearth_home):
    admission = admit(hearth_home, _governor())
    assert not admission.allowed
    assert "consent" in admission.reason


def test_paused_device_declines_rounds(hearth_home):
    grant(hearth_home, (Modality.POINTER,))
    assert admit(hearth_home, _governor()).allowed
    pause(hearth_home)
    assert admit(hearth_home, _governor()).reason == "paused by the employee"


def test_governor_reason_reaches_the_admission(hearth_home):
    grant(hearth_home, (Modality.POINTER,))
    assert "CPU busy" in admit(hearth_home, _governor(cpu=99)).reason


def test_hearth_join_without_consent_does_not_join(hearth_home, tmp_path):
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    private, public = generate_org_key(tmp_path / "pki")
    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_text())
    signature = sign_policy(policy.read_bytes(), load_org_key(private)).token
    result = CliRunner().invoke(
        app,
        [
            *("join", "--superlink", "127.0.0.1:1", "--root-cert", str(cert), "--key", str(cert)),
            *("--org-key", str(public), "--policy", str(policy), "--policy-signature", signature),
        ],
    )
    assert result.exit_code == 1
    assert "no consent" in result.output
    assert read_deployment(hearth_home)["join"]["joined"] is False


def test_status_shows_the_last_refusal_and_decline(hearth_home):
    record(hearth_home, "refusal", run_id=1, reason="app bundle refused (unsigned): no signature")
    record(hearth_home, "decline", run_id=1, round="2", reason="on battery")
    deployment = status_report()["deployment"]
    assert "unsigned" in deployment["last_refusal"]["reason"]
    assert deployment["last_decline"]["reason"] == "on battery"
