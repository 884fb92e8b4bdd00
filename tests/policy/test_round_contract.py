"""The round contract both sides import: one spelling of the keys and of the defaults."""

import tomllib
from pathlib import Path

import pytest

from policy.round_contract import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_HIDDEN_WIDTH,
    DEFAULT_LEARNING_RATE,
    RoundContract,
    RoundContractError,
)
from privacy.policy import load_policy, policy_hash
from server.campaign import round_instructions
from server.config import CampaignConfig, ServerConfigError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _sent(**campaign):
    return round_instructions(CampaignConfig(**campaign), load_policy(), 3)


def test_what_the_server_sends_a_device_parses_back_unchanged():
    sent = _sent(num_server_rounds=5, learning_rate=0.5, context_length=12)
    contract = RoundContract.from_config(sent)
    assert contract == RoundContract(3, 5, policy_hash(load_policy()), 0.5, 12)
    assert contract.to_config() == sent


def test_the_campaign_defaults_are_the_contracts_and_pyprojects():
    run_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert run_config["learning-rate"] == CampaignConfig().learning_rate == DEFAULT_LEARNING_RATE
    assert run_config["context-length"] == CampaignConfig().context_length == DEFAULT_CONTEXT_LENGTH
    assert run_config["hidden-width"] == CampaignConfig().hidden_width == DEFAULT_HIDDEN_WIDTH == 32
    # A device told only the round and the policy trains as the default campaign would.
    partial = {"round": 1, "policy-hash": "h"}
    assert RoundContract.from_config(partial) == RoundContract(1, 1, "h")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"policy-hash": "h"}, "'round' is missing"),
        ({"round": True, "policy-hash": "h"}, "'round' must be int, got bool"),
        ({"round": 1, "policy-hash": "h", "learning-rate": "4"}, "'learning-rate' must be float"),
        ({"round": 1, "policy-hash": "h", "learning-rate": -1.0}, "'learning-rate' must be"),
        ({"round": 1, "policy-hash": "h", "context-length": 65}, "'context-length' must be in"),
        ({"round": 1, "policy-hash": "h", "hidden-width": 65}, "'hidden-width' must be in"),
        ({"round": 1, "policy-hash": "h", "hidden-width": 0}, "'hidden-width' must be in"),
        ({"round": 1, "policy-hash": "h", "hidden-width": 32.0}, "'hidden-width' must be int"),
        ({"round": 4, "num-rounds": 3, "policy-hash": "h"}, "inconsistent"),
    ],
)
def test_a_bad_contract_is_one_line_naming_the_key(config, message):
    with pytest.raises(RoundContractError, match=message) as bad:
        RoundContract.from_config(config)
    assert "\n" not in str(bad.value)


def test_keys_outside_the_contract_are_ignored():
    # A curious server's seed reaches nothing on the device.
    config = {"round": 2, "num-rounds": 4, "policy-hash": "h", "seed": 7, "node-id": 9}
    assert RoundContract.from_config(config) == RoundContract(2, 4, "h")


def test_a_run_config_every_device_would_decline_is_refused_before_round_one():
    with pytest.raises(ServerConfigError, match="'learning-rate'"):
        CampaignConfig.from_run_config({"learning-rate": 0.0})
    with pytest.raises(ServerConfigError, match="'context-length'"):
        CampaignConfig.from_run_config({"context-length": 65})


@pytest.mark.parametrize("width", [0, 65, 10_000])
def test_a_run_config_hidden_width_out_of_bounds_is_refused_in_one_line(width):
    with pytest.raises(ServerConfigError, match=r"'hidden-width' must be in 1\.\.64") as bad:
        CampaignConfig.from_run_config({"hidden-width": width})
    assert "\n" not in str(bad.value)
    with pytest.raises(ServerConfigError, match="'hidden-width' must be int"):
        CampaignConfig.from_run_config({"hidden-width": "64"})


def test_the_hidden_width_the_run_config_names_is_what_every_device_is_told():
    config = CampaignConfig.from_run_config({"hidden-width": 64})
    sent = round_instructions(config, load_policy(), 1)
    assert sent["hidden-width"] == 64
    assert RoundContract.from_config(sent).hidden_width == 64
