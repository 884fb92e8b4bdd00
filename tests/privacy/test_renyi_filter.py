"""The per-day Rényi filter: bucket totals, fixed orders, expiry, refusal, migration."""

import json
import math
import os

import dp_accounting
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.ledger import BudgetRule, DeviceLedger, check_round, planned_noise
from privacy.policy import load_policy
from privacy.renyi_filter import (
    DAY_SECONDS,
    DEFAULT_ORDERS,
    filter_for,
    lifetime_rounds,
    rdp_of,
    window,
)

DELTA = 1e-5
DAY0 = 20_000
TRAIN = (1.5, 0.25, 8)
EVALUATION = (8.0, 1.0, 1)


def _at(day, hour=12.0):
    return (DAY0 + day) * DAY_SECONDS + hour * 3600


def _rule(cap=10.0, retention=2.0, orders=DEFAULT_ORDERS):
    return BudgetRule(filter_for(orders, cap, DELTA), retention)


def _dp_accounting_rdp(charges, orders):
    """RDP at ``orders`` computed by Google's dp-accounting, independently of Opacus."""
    accountant = dp_accounting.rdp.RdpAccountant(orders=list(orders))
    for noise, rate, steps in charges:
        gaussian = dp_accounting.GaussianDpEvent(noise)
        event = gaussian if rate >= 1 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return np.asarray(accountant._rdp)  # its RDP curve at our fixed orders


def test_each_day_bucket_matches_an_independent_computation(tmp_path):
    rule = _rule(retention=2.0)
    ledger = DeviceLedger(tmp_path / "ledger.bin", os.urandom(32))
    times = [_at(0), _at(1), _at(2, 8), _at(2, 20), _at(3)]
    for server_round, t in enumerate(times, start=1):
        ledger.record(server_round, [TRAIN, EVALUATION], rule, "h", now=t)
    for day in range(-2, 4):
        # By hand: a round at t reads every day from the retention cutoff's to today's.
        rounds = [t for t in times if math.floor((t - 2 * DAY_SECONDS) / DAY_SECONDS) <= DAY0 + day]
        rounds = [t for t in rounds if DAY0 + day <= math.floor(t / DAY_SECONDS)]
        expected = _dp_accounting_rdp([TRAIN, EVALUATION] * len(rounds), rule.renyi.orders)
        assert ledger.rdp_of(DAY0 + day, rule.renyi) == pytest.approx(expected, rel=1e-6)
    # Day 2 was read by both of its own rounds and by day 3's; day 0 only by days 0..2.
    assert len(ledger.history_of(DAY0 + 2)) == 2 * 3
    assert len(ledger.history_of(DAY0)) == 2 * 4


def test_the_filter_uses_only_the_policys_orders_with_a_union_bound_over_them():
    renyi = filter_for((2.0, 4.0, 8.0), 10.0, DELTA)
    slack = np.log(3 / DELTA) / (np.array([2.0, 4.0, 8.0]) - 1)
    assert renyi.budgets() == pytest.approx(10.0 - slack)
    spent = rdp_of([(1.0, 0.25, 200)], renyi.orders)
    assert renyi.epsilon(spent) == pytest.approx(np.min(spent + slack))
    # Another set of orders gives another answer: nothing is optimised after the fact.
    other = filter_for((32.0,), 10.0, DELTA)
    assert other.epsilon(rdp_of([(1.0, 0.25, 200)], other.orders)) != renyi.epsilon(spent)
    # It admits exactly while some order stays within its budget.
    assert renyi.admits(np.zeros(3), spent) == bool(np.any(spent <= renyi.budgets()))


@pytest.mark.parametrize("cap", [0.05, 0.3, 1.0, 10.0])
@pytest.mark.parametrize("orders", [(1.5,), (2.0, 4.0, 8.0), (64.0, 128.0), DEFAULT_ORDERS])
def test_has_room_says_what_the_budgets_say(orders, cap):
    # The policy check uses has_room so that loading a policy (the recorder does) needs no numpy.
    renyi = filter_for(orders, cap, DELTA)
    assert renyi.has_room() == bool(np.any(renyi.budgets() > 0))


def test_an_example_spanning_midnight_is_charged_to_both_days(tmp_path):
    rule = _rule(retention=1 / 24)  # an hour: the window is today, and yesterday after 23:00
    ledger = DeviceLedger(tmp_path / "ledger.bin", os.urandom(32))
    just_after_midnight = _at(1, 0.5)
    # The vault holds a window of actions from 23:59 of day 0 to 00:01 of day 1.
    ledger.record(1, TRAIN, rule, "h", held={DAY0, DAY0 + 1}, now=just_after_midnight)
    one_round = rdp_of([TRAIN], rule.renyi.orders)
    assert ledger.rdp_of(DAY0, rule.renyi) == pytest.approx(one_round)
    assert ledger.rdp_of(DAY0 + 1, rule.renyi) == pytest.approx(one_round)
    # At noon the hour-long window holds only today; a day-0 example would no longer exist.
    ledger.record(2, TRAIN, rule, "h", held={DAY0 + 1}, now=_at(1))
    assert ledger.rdp_of(DAY0, rule.renyi) == pytest.approx(one_round)
    assert ledger.rdp_of(DAY0 + 1, rule.renyi) == pytest.approx(2 * one_round)


def _exhaust(ledger, rule, now):
    rounds = 0
    while check_round(ledger, TRAIN, rule, now=now).allowed:
        ledger.record(rounds, TRAIN, rule, "h", now=now)
        rounds += 1
    return rounds


def test_a_round_touching_an_exhausted_bucket_is_refused_until_that_day_expires(tmp_path):
    rule = _rule(cap=6.0, retention=2.0)
    ledger = DeviceLedger(tmp_path / "ledger.bin", os.urandom(32))
    assert _exhaust(ledger, rule, _at(0)) > 0
    for day in (0, 1, 2):  # day 0's bucket is in the window for 3 calendar days
        decision = check_round(ledger, TRAIN, rule, now=_at(day))
        assert not decision.allowed and "budget exhausted" in decision.reason
        assert DAY0 in decision.days
    # The day after, every exhausted bucket has left the window: the budget is free again.
    freed = check_round(ledger, TRAIN, rule, now=_at(3))
    assert freed.allowed and DAY0 not in freed.days and freed.epsilon_now == 0.0
    assert [b.day for b in ledger.buckets(rule, _at(3))] == [DAY0 + 1, DAY0 + 2, DAY0 + 3]


def test_the_decision_does_not_depend_on_which_days_hold_data(tmp_path):
    rule = _rule(cap=6.0, retention=2.0)
    ledger = DeviceLedger(tmp_path / "ledger.bin", os.urandom(32))
    _exhaust(ledger, rule, _at(0))
    for now in (_at(1), _at(3)):
        decisions = {
            check_round(ledger, TRAIN, rule, held=held, now=now).allowed
            for held in (set(), {DAY0 + 1}, set(window(now, 2.0)))
        }
        assert len(decisions) == 1


def test_a_held_day_whose_bucket_expired_is_never_trained_on_again(tmp_path):
    rule = _rule(retention=2.0)
    ledger = DeviceLedger(tmp_path / "ledger.bin", os.urandom(32))
    ledger.record(1, TRAIN, rule, "h", now=_at(5))
    # The clock went back, or retention did not run: day 0's data reappears.
    decision = check_round(ledger, TRAIN, rule, held={DAY0}, now=_at(5))
    assert not decision.allowed and "already expired" in decision.reason


def test_planned_noise_lets_a_day_join_every_round_of_its_lifetime_and_no_more(tmp_path):
    policy = load_policy()
    rule = BudgetRule.from_policy(policy)
    noise = planned_noise(policy, rule)
    rounds = lifetime_rounds(policy.training.rounds_per_day, policy.data.retention_days)
    assert rounds == 3  # 0.2 a day, 14 days kept: on 15 calendar days
    t = policy.training
    per_round = [(noise, t.sample_rate, t.steps), (t.evaluation_noise_multiplier, 1.0, 1)]
    spent = rdp_of(per_round * rounds, rule.renyi.orders)
    assert rule.renyi.admits(np.zeros_like(spent), np.zeros_like(spent) + spent)
    one_more = rdp_of(per_round * (rounds + 1), rule.renyi.orders)
    assert not rule.renyi.admits(np.zeros_like(one_more), one_more)
    # A stricter cap plans more noise; the campaign's length plays no part.
    assert planned_noise(policy, BudgetRule.from_policy(policy, 5.0)) > noise


def test_a_version_one_ledger_is_migrated_charging_every_day_up_to_each_round(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "ledger.bin"
    old = [
        {
            "round": 1,
            "noise_multiplier": 1.5,
            "sample_rate": 0.25,
            "steps": 8,
            "epsilon_after": 1.0,
            "delta": DELTA,
            "policy_hash": "h",
            "time": _at(0),
        }
    ]
    nonce = os.urandom(12)
    plain = json.dumps(old).encode()
    path.write_bytes(nonce + AESGCM(key).encrypt(nonce, plain, b"hearth-device-ledger-v1"))
    ledger = DeviceLedger(path, key)
    assert ledger.migrated and ledger.entries[0].kind == "v1"
    rule = _rule(retention=2.0)
    one = rdp_of([TRAIN], rule.renyi.orders)
    assert ledger.rdp_of(DAY0, rule.renyi) == pytest.approx(one)
    assert ledger.rdp_of(DAY0 - 1, rule.renyi) == pytest.approx(one)
    assert ledger.rdp_of(DAY0 + 1, rule.renyi) == pytest.approx(0 * one)
    ledger.record(2, TRAIN, rule, "h", now=_at(1))
    assert not DeviceLedger(path, key).migrated  # written back in the new format
