"""The shipped tester policy: the deployment policy, a pilot's cohort, a tester's governor."""

from pathlib import Path

from client.deployment.governor import Governor
from client.deployment.metering import Metering
from privacy.policy import deployment_policy_text, load_policy, parse_policy

TESTER = Path(__file__).resolve().parents[2] / "privacy" / "tester_policy.toml"


def test_the_tester_policy_changes_only_the_governor_cohort_and_shares():
    tester = load_policy(TESTER).model_dump()
    deployment = parse_policy(deployment_policy_text()).model_dump()
    changed = {
        (section, key)
        for section, values in tester.items()
        for key, value in values.items()
        if deployment[section][key] != value
    }
    assert changed <= {
        ("governor", "idle_seconds"),
        ("governor", "max_cpu_percent"),
        ("governor", "require_mains_power"),
        ("governor", "allow_unknown_metering"),
        ("training", "min_cohort"),
        ("aggregation", "min_num_shares"),
        ("aggregation", "min_reconstruction_fraction"),
    }
    assert tester["aggregation"]["require_secure_aggregation"] is True


def test_a_testers_busy_machine_with_someone_typing_still_trains_but_never_metered():
    settings = load_policy(TESTER).governor
    busy = Governor(
        settings,
        idle=lambda: 0.0,
        mains=lambda: False,
        cpu=lambda: None,
        metering=lambda: Metering.UNKNOWN,
    )
    assert busy.decide().allowed
    metered = Governor(settings, idle=lambda: 0.0, metering=lambda: Metering.METERED)
    assert not metered.decide().allowed
