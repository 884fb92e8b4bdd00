import pytest

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
    assert "one user" in words


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
