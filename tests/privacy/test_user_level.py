"""The user-level accountant against dp-accounting, and its ledger over the horizon."""

from __future__ import annotations

import dp_accounting
import pytest

from privacy.user_level import (
    NoisedRound,
    UserLevelLedger,
    epsilon_readers,
    epsilon_server,
    noise_for_target,
    rounds_within,
)

ORDERS = [1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, *range(5, 64), 80.0, 128.0, 256.0]


def _dp_accounting(events: list[tuple[float, float, int]], delta: float, pld: bool) -> float:
    acc = dp_accounting.pld.PLDAccountant() if pld else dp_accounting.rdp.RdpAccountant(ORDERS)
    for z, q, rounds in events:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
        acc.compose(event, rounds)
    return float(acc.get_epsilon(delta))


def test_the_readers_figure_is_dp_accountings_sampled_gaussian_composed_over_rounds():
    rounds = [NoisedRound(5.0, 0.1)] * 30
    assert epsilon_readers(rounds, 1e-7) == pytest.approx(
        _dp_accounting([(5.0, 0.1, 30)], 1e-7, pld=False), rel=1e-9
    )
    # PLD is the tighter accounting of the same mechanism: RDP never claims less.
    pld = epsilon_readers(rounds, 1e-7, "pld")
    assert pld == pytest.approx(_dp_accounting([(5.0, 0.1, 30)], 1e-7, pld=True), rel=1e-3)
    assert pld <= epsilon_readers(rounds, 1e-7) <= 1.5 * pld


def test_rounds_of_different_campaigns_compose_as_their_own_mechanisms():
    mixed = [NoisedRound(5.0, 0.1)] * 10 + [NoisedRound(3.0, 0.03)] * 20
    expected = _dp_accounting([(5.0, 0.1, 10), (3.0, 0.03, 20)], 1e-7, pld=False)
    assert epsilon_readers(mixed, 1e-7) == pytest.approx(expected, rel=1e-9)


def test_facing_the_server_there_is_no_sampling_amplification():
    rounds = [NoisedRound(5.0, 0.1)] * 10
    unsampled = dp_accounting.rdp.RdpAccountant(ORDERS)
    unsampled.compose(dp_accounting.GaussianDpEvent(5.0), 10)
    assert epsilon_server(rounds, 1e-7) == pytest.approx(unsampled.get_epsilon(1e-7), rel=1e-9)
    assert epsilon_server(rounds, 1e-7) > 3 * epsilon_readers(rounds, 1e-7)


def test_the_shipped_target_buys_the_rounds_the_policy_says():
    assert rounds_within(1.0, 5.0, 0.1, 1e-7) == 90
    assert epsilon_readers([NoisedRound(5.0, 0.1)] * 90, 1e-7) <= 1.0
    assert epsilon_readers([NoisedRound(5.0, 0.1)] * 91, 1e-7) > 1.0
    z = noise_for_target(1.0, 0.1, 90, 1e-7)
    assert z <= 5.0 and epsilon_readers([NoisedRound(z, 0.1)] * 90, 1e-7) <= 1.0


def test_the_ledger_keeps_every_campaign_within_the_horizon_only(tmp_path):
    ledger = UserLevelLedger(tmp_path / "user.json", horizon_days=365)
    day = 86400.0
    ledger.record(NoisedRound(5.0, 0.1, time=0.0, campaign="old"))
    ledger.record(NoisedRound(5.0, 0.1, time=300 * day, campaign="a"))
    ledger.record(NoisedRound(5.0, 0.1, time=301 * day, campaign="b"))
    now = 400 * day
    assert [r.campaign for r in ledger.rounds(now)] == ["a", "b"]
    assert [r.campaign for r in ledger.rounds(now, exclude_campaign="b")] == ["a"]


def test_a_damaged_ledger_stops_rather_than_restarting_the_budget(tmp_path):
    path = tmp_path / "user.json"
    path.write_text("[{not json")
    with pytest.raises(ValueError, match="damaged"):
        UserLevelLedger(path, 365).rounds()
