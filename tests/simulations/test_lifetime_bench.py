"""The lifetime benchmark's laptop, shortened: every round at the pace, no day past the cap."""

import pytest

from privacy.policy import load_policy
from simulations.benchmarks.lifetime import paced_rounds, simulate


def test_the_pace_offers_rounds_per_day_on_average_in_whole_rounds():
    assert [paced_rounds(0.2, d) for d in range(10)] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert [paced_rounds(1.0, d) for d in range(3)] == [1, 1, 1]
    assert sum(paced_rounds(2.5, d) for d in range(4)) == 10


@pytest.mark.slow  # seconds: 17 days of accounting and an independent recomputation
def test_a_laptop_joins_every_round_at_the_policys_pace_and_no_example_passes_the_cap(tmp_path):
    result = simulate(tmp_path, days=17, burst=False)  # past one full window and an expiry
    pace = load_policy().training.rounds_per_day
    offered = sum(paced_rounds(pace, d) for d in range(17))
    assert offered >= 3 and result["rounds_per_day"] == pace
    assert result["rounds_joined"] == offered and result["rounds_refused"] == 0
    assert max(result["lifetime_epsilon_by_data_day"]) <= result["cap"]
    assert max(result["max_live_epsilon_by_day"]) <= result["cap"]
    assert result["lifetime_epsilon_by_data_day"][2] > 0.95 * result["cap"]  # and uses it
