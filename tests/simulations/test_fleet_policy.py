"""The fleet benchmark's policy: distributed noise on, calibrated for the cohort it names."""

from privacy.policy import load_policy
from simulations.deployment import DistributedNoise, relaxed_policy


def test_distributed_noise_policy_turns_on_the_shares_for_its_cohort(tmp_path):
    path = relaxed_policy(
        tmp_path / "p.toml", 1000.0, DistributedNoise(noise_multiplier=1.5, min_cohort=50)
    )
    training = load_policy(path).training
    assert training.distributed_noise
    assert training.central_noise_multiplier == 1.5
    assert training.min_cohort == 50


def test_without_distributed_noise_the_relaxed_policy_stays_the_demo_policy(tmp_path):
    training = load_policy(relaxed_policy(tmp_path / "p.toml")).training
    assert not training.distributed_noise
    assert training.central_noise_multiplier == 0.0
