import pytest

from privacy.accountants import RoundShape, per_action_at_cap
from privacy.policy import (
    PolicyError,
    demo_policy_text,
    deployment_policy_text,
    describe,
    load_policy,
    parse_policy,
    policy_changes,
    policy_hash,
)
from tests.server.fakes import small_policy_text


def _with(old, new):
    text = small_policy_text()
    assert old in text
    return text.replace(old, new)


def test_the_shipped_policy_is_valid_and_says_its_units():
    words = describe(load_policy())
    assert "one example on one device" in words
    assert "add/remove one example" in words
    assert "one recorded action on one device (in up to 9 examples)" in words
    assert "user-level epsilon 1 (unit: one user, every campaign within 365 days" in words
    assert "its share of the Gaussian noise" in words


def test_the_demo_policy_says_it_gives_no_user_level_guarantee():
    words = describe(parse_policy(demo_policy_text()))
    assert "no user-level guarantee" in words


def test_the_device_cap_is_per_example_over_the_days_it_is_kept_not_one_campaign():
    words = describe(load_policy())
    assert "Per example, over the 14 days it is kept" in words
    assert "in every campaign" in words and "per campaign" not in words
    assert "fixed orders 2, 3, 4, 5, 6, 8, 12, 16, 32, 64" in words
    assert "can join 3 rounds over its lifetime (0.2 a day, whatever the campaign)" in words


def test_a_policy_whose_orders_leave_no_room_under_the_cap_is_refused_in_one_line():
    text = _with(
        "renyi_orders = [2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]",
        "renyi_orders = [2.0]",
    )
    with pytest.raises(PolicyError, match="no Rényi order in renyi_orders leaves room"):
        parse_policy(text)
    with pytest.raises(PolicyError, match="above 1"):
        parse_policy(text.replace("renyi_orders = [2.0]", "renyi_orders = [1.0, 4.0]"))


def test_the_description_gives_the_per_action_figure_of_a_laptop_spending_the_cap():
    policy = load_policy()
    shape = RoundShape(0.25, 8, 8.0)
    noise, per_action = per_action_at_cap(10.0, 1e-5, shape, 3, 8)  # 0.2 a day over 15 days
    words = describe(policy)
    assert f"noise x{noise:.2f}" in words
    assert f"epsilon {per_action:,.0f} per action" in words


def test_the_description_says_the_round_shape_and_evaluations_are_the_policys():
    words = describe(
        parse_policy(
            _with("steps = 8", "steps = 12").replace("batch_size = 512", "batch_size = 64")
        )
    )
    assert "not the laptop's data, fixes the shape of a round" in words
    assert "each of 12 DP-SGD steps with probability 0.25" in words
    assert "divided by 64" in words
    assert "only as Gaussian-noised sums" in words and "charged" in words


def test_central_noise_protects_against_checkpoint_readers_not_the_server():
    words = describe(
        parse_policy(_with("central_noise_multiplier = 0.0", "central_noise_multiplier = 1.0"))
    )
    assert "one user, every campaign within 365 days" in words and "add/remove one user" in words
    assert "readers of the model and checkpoints, not against the server" in words
    assert "no user-level guarantee" not in words


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("delta = 1e-5", "delta = 2.0", "privacy.delta"),
        ("device_epsilon_cap = 10.0", "device_epsilon_cap = -1", "privacy.device_epsilon_cap"),
        ("min_cohort = 2", "min_cohort = 0", "training.min_cohort"),
        ("retention_days = 14", "retention_days = 'two weeks'", "data.retention_days"),
        (
            'allowed_modalities = ["pointer", "keys", "apps"]',
            'allowed_modalities = ["mind"]',
            "data.allowed_modalities",
        ),
        ("max_cpu_percent = 30.0", "max_cpu_percent = 30.0\nturbo = true", "governor.turbo"),
        ("min_num_shares = 3", "min_num_shares = 2", "aggregation.min_num_shares"),
        (
            "min_reconstruction_fraction = 0.5",
            "min_reconstruction_fraction = 1.5",
            "aggregation.min_reconstruction_fraction",
        ),
        (
            "require_secure_aggregation = false",
            "require_secure_aggregation = 'yes'",
            "aggregation.require_secure_aggregation",
        ),
        ("delta = 1e-5\n", "", "privacy.delta"),
    ],
)
def test_each_invalid_policy_gives_one_line_naming_the_key(old, new, key):
    with pytest.raises(PolicyError) as info:
        parse_policy(_with(old, new), "policy.toml")
    message = str(info.value)
    assert f"'{key}'" in message
    assert "policy.toml" in message
    assert "\n" not in message


def test_malformed_toml_is_one_clear_line():
    with pytest.raises(PolicyError, match=r"not valid TOML.*line"):
        parse_policy("[privacy\ndelta = 1", "p.toml")


def test_a_policy_file_edited_between_reads_is_read_anew_and_a_bad_edit_still_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(small_policy_text())
    assert load_policy(path) is load_policy(path)  # parsed once per process
    path.write_text(_with("min_cohort = 2", "min_cohort = 7"))
    assert load_policy(path).training.min_cohort == 7
    path.write_text(_with("delta = 1e-5\n", ""))
    for _ in range(2):  # an error is never cached as a policy
        with pytest.raises(PolicyError, match=r"privacy\.delta"):
            load_policy(path)


def test_the_hash_ignores_layout_but_not_values():
    text = small_policy_text()
    reordered = "\n".join(reversed(text.split("\n\n")))
    assert policy_hash(parse_policy(text)) == policy_hash(parse_policy(reordered))
    assert policy_hash(parse_policy(text)) != policy_hash(
        parse_policy(_with("min_cohort = 2", "min_cohort = 3"))
    )


def test_load_policy_reads_hearth_policy_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "p.toml"
    path.write_text(_with("min_cohort = 2", "min_cohort = 7"))
    monkeypatch.setenv("HEARTH_POLICY", str(path))
    assert load_policy().training.min_cohort == 7


def test_the_simulation_policy_does_not_require_secure_aggregation_and_fears_unknown_metering():
    policy = load_policy()
    assert not policy.aggregation.require_secure_aggregation
    assert not policy.governor.allow_unknown_metering
    assert "SecAgg+ is not required" in describe(policy)
    assert "nor on one whose metering is unknown" in describe(policy)


def test_the_shipped_deployment_policy_differs_from_the_default_only_in_aggregation_and_cohort():
    deployment = parse_policy(deployment_policy_text(), "deployment_policy.toml")
    changed = {c.setting for c in policy_changes(load_policy(), deployment)}
    # The deployment policy keeps no central noise (a cohort of 3 cannot carry it); the
    # default targets 10,000 laptops with distributed noise, and its update clip and local
    # pace are chosen for that noise (bench/user-sweep/levers2.md).
    assert changed == {
        "training.update_clip_norm",
        "training.rounds_per_day",
        "privacy.user_epsilon_target",
        "privacy.user_delta",
        "training.central_noise_multiplier",
        "training.distributed_noise",
        "aggregation.require_secure_aggregation",
        "aggregation.min_num_shares",
        "aggregation.min_reconstruction_fraction",
        "training.min_cohort",
    }
    assert deployment.aggregation.require_secure_aggregation
    assert deployment.aggregation.min_threshold(5) == 3


def test_the_deployment_policy_says_secaggplus_holds_against_a_curious_server_only():
    words = describe(parse_policy(deployment_policy_text()))
    assert "only under SecAgg+" in words
    assert "at least 5 laptops" in words and "(3 of 5)" in words
    assert "against a curious server, not one that deviates" in words


def test_a_policy_without_an_aggregation_section_does_not_require_secure_aggregation():
    start = small_policy_text().index("[aggregation]")
    policy = parse_policy(small_policy_text()[:start])
    assert not policy.aggregation.require_secure_aggregation


@pytest.mark.parametrize(
    ("fraction", "shares", "threshold"),
    [(0.5, 3, 2), (0.6, 5, 3), (0.5, 5, 3), (1.0, 4, 4), (0.1, 3, 2), (2 / 3, 3, 2)],
)
def test_the_least_threshold_is_the_fraction_of_shares_rounded_up_and_at_least_two(
    fraction, shares, threshold
):
    text = _with("min_reconstruction_fraction = 0.5", f"min_reconstruction_fraction = {fraction}")
    assert parse_policy(text).aggregation.min_threshold(shares) == threshold


def test_policy_changes_name_each_setting_with_its_old_and_new_value():
    before = parse_policy(small_policy_text())
    after = parse_policy(
        _with("min_cohort = 2", "min_cohort = 4").replace(
            "retention_days = 14", "retention_days = 30"
        )
    )
    changes = [str(c) for c in policy_changes(before, after)]
    assert changes == ["training.min_cohort: 2 -> 4", "data.retention_days: 14.0 -> 30.0"]
    assert policy_changes(after, after) == []
    assert len(policy_changes(None, after)) > 20  # no earlier policy: every setting


def test_policy_changes_read_a_policy_kept_as_json_and_settings_it_did_not_have():
    before = load_policy().model_dump(mode="json")
    del before["aggregation"]
    changes = {c.setting: c for c in policy_changes(before, load_policy())}
    assert str(changes["aggregation.require_secure_aggregation"]) == (
        "aggregation.require_secure_aggregation: (not set) -> false"
    )
