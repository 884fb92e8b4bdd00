import math

from privacy.policy import parse_policy
from simulations.sweep import SweepPoint, policy_for, write_outputs


def test_each_budget_becomes_a_valid_policy_with_that_cap_and_noise():
    policy = parse_policy(policy_for(2.0, 1.7))
    assert policy.privacy.device_epsilon_cap == 2.0
    assert policy.training.local_noise_multiplier == 1.7
    no_dp = parse_policy(policy_for(math.inf, 0.0))
    assert no_dp.training.local_noise_multiplier == 0.0


def test_outputs_are_a_png_and_a_table_with_one_row_per_budget(tmp_path):
    points = [
        SweepPoint(1.0, 3.0, 0.30, 0.50, 0.55, 0.98),
        SweepPoint(8.0, 0.9, 0.50, 0.70, 0.55, 7.9),
        SweepPoint(math.inf, 0.0, 0.60, 0.80, 0.55, 0.0),
    ]
    png, table = write_outputs(points, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(table.read_text().splitlines()) == 2 + len(points)
