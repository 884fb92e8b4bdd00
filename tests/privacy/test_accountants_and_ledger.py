import os

import dp_accounting
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy.accountants import (
    PlanningError,
    epsilon_local,
    epsilon_user,
    noise_for_local,
    noise_for_user,
    noise_to_last,
)
from privacy.ledger import BudgetRule, DeviceLedger, LedgerError, check_round, effective_cap
from privacy.renyi_filter import DEFAULT_ORDERS, filter_for


def test_local_epsilon_agrees_with_the_opacus_accountants():
    history = [(1.1, 0.02, 300), (1.1, 0.02, 300)]
    for ours, theirs in (("rdp", RDPAccountant()), ("prv", PRVAccountant())):
        theirs.history = list(history)
        assert epsilon_local(history, 1e-5, ours) == pytest.approx(theirs.get_epsilon(1e-5))


def test_user_epsilon_agrees_with_dp_accounting():
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.3)), 40
    )
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event)
    assert epsilon_user(1.3, 0.05, 40, 1e-6, "pld") == pytest.approx(pld.get_epsilon(1e-6))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_local_planning_directions_invert_each_other(accountant):
    noise = noise_for_local(2.0, 0.01, 1000, 1e-5, accountant)
    assert epsilon_local([(noise, 0.01, 1000)], 1e-5, accountant) <= 2.0
    assert epsilon_local([(noise - 0.01, 0.01, 1000)], 1e-5, accountant) > 2.0


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_user_planning_directions_invert_each_other(accountant):
    noise = noise_for_user(4.0, 0.1, 30, 1e-5, accountant)
    assert epsilon_user(noise, 0.1, 30, 1e-5, accountant) <= 4.0
    assert epsilon_user(noise - 0.01, 0.1, 30, 1e-5, accountant) > 4.0


def _rule(cap=10.0, retention=14.0):
    return BudgetRule(filter_for(DEFAULT_ORDERS, cap, 1e-5), retention)


NOW = 20_000 * 86400.0 + 12 * 3600.0  # noon of day 20000 (UTC)


def test_a_round_over_the_cap_is_refused_and_the_ledger_is_unchanged(tmp_path):
    ledger = DeviceLedger(tmp_path / "ledger.bin", os.urandom(32))
    planned = (1.0, 0.05, 200)
    ledger.record(1, planned, _rule(), "hash", now=NOW)
    spent = ledger.spent(_rule(), NOW)
    decision = check_round(ledger, planned, _rule(cap=spent + 0.01), now=NOW)
    assert not decision.allowed and "budget exhausted" in decision.reason
    assert len(ledger.entries) == 1
    assert check_round(ledger, planned, _rule(cap=100), now=NOW).allowed


def test_the_ledger_persists_encrypted_and_refuses_tampering(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "ledger.bin"
    DeviceLedger(path, key).record(3, (1.0, 0.1, 10), _rule(), "abc", now=NOW)
    again = DeviceLedger(path, key)
    assert again.history() == [(1.0, 0.1, 10)]
    assert b"abc" not in path.read_bytes()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(LedgerError, match="failed authentication"):
        DeviceLedger(path, key)


def test_the_employee_cap_can_only_make_things_stricter():
    assert effective_cap(10.0, 3.0) == 3.0
    assert effective_cap(10.0, 30.0) == 10.0
    assert effective_cap(10.0, None) == 10.0


def test_spreading_the_budget_ends_the_campaign_at_the_cap_and_not_above():
    history = [(1.0, 0.25, 8)]
    noise = noise_to_last(history, 0.25, 8, rounds_left=9, cap=10.0, delta=1e-5, floor=0.5)
    total = epsilon_local([*history, *[(noise, 0.25, 8)] * 9], 1e-5)
    assert 9.9 < total <= 10.0
    # A little less noise would pass the cap: the planner picked the least.
    assert epsilon_local([*history, *[(noise * 0.98, 0.25, 8)] * 9], 1e-5) > 10.0


def test_spreading_never_goes_below_the_policy_floor():
    assert noise_to_last([], 0.01, 5, rounds_left=3, cap=10.0, delta=1e-5, floor=1.2) == 1.2


def test_spreading_a_budget_already_spent_is_a_planning_error():
    spent = [(0.5, 0.5, 50)] * 5
    with pytest.raises(PlanningError):
        noise_to_last(spent, 0.25, 8, rounds_left=2, cap=1.0, delta=1e-5, floor=0.5)


def test_the_recorded_spend_is_the_most_spent_day_recomposed(tmp_path):
    ledger = DeviceLedger(tmp_path / "ledger.bin", bytes(32))
    assert ledger.recorded_spend() == 0.0
    for server_round in (1, 2):
        ledger.record(server_round, (1.0, 0.25, 8), _rule(), "h", now=NOW)
    assert ledger.recorded_spend() == pytest.approx(ledger.spent(_rule(), NOW))
    assert ledger.recorded_spend() > ledger.entries[0].epsilon_after
