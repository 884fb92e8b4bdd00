import pytest

from privacy.accountants import RoundShape, per_action_at_cap
from privacy.policy import (
    PolicyError,
    default_policy_text,
    describe,
    load_policy,
    parse_policy,
    policy_hash,
)


def _with(old, new):
    text = default_policy_text()
    assert old in text
    return text.replace(old, new)


def test_the_shipped_policy_is_valid_and_says_its_units():
    words = describe(load_policy())
    assert "one example on one device" in words
    assert "add/remove one example" in words
    assert "one recorded action on one device (in up to 9 examples)" in words
    assert "no user-level guarantee" in words


def test_the_device_cap_is_over_the_ledgers_lifetime_not_one_campaign():
    words = describe(load_policy())
    assert "every round of every campaign" in words
    assert "per campaign" not in words


def test_the_description_gives_the_per_action_figure_of_a_laptop_spending_the_cap():
    policy = load_policy()
    shape = RoundShape(0.25, 8, 8.0)
    noise, per_action = per_action_at_cap(10.0, 1e-5, shape, 10, 8)
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
    assert "one user across the campaign" in words and "add/remove one user" in words
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


def test_the_hash_ignores_layout_but_not_values():
    text = default_policy_text()
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
