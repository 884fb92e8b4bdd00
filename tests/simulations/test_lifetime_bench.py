"""The lifetime benchmark's laptop, shortened: every day joined, no day of data past the cap."""

import pytest

from simulations.benchmarks.lifetime import simulate


@pytest.mark.slow  # about 20 s: 17 days of accounting and an independent recomputation
def test_a_laptop_joins_a_round_every_day_and_no_example_passes_the_cap(tmp_path):
    result = simulate(tmp_path, days=17, burst=False)  # past one full window and two expiries
    assert result["days_contributed"] == 17 and result["rounds_refused"] == 0
    assert max(result["lifetime_epsilon_by_data_day"]) <= result["cap"]
    assert max(result["max_live_epsilon_by_day"]) <= result["cap"]
    assert result["lifetime_epsilon_by_data_day"][2] > 0.95 * result["cap"]  # and uses it
