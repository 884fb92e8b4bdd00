"""The privacy budget this laptop spent, as ``hearth budget`` and the dashboard show it.

Figures only, each with its unit, adjacency and delta; the command and the
dashboard each render them their own way.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from typing import Any

from client.control.device_records import DeviceRecords
from client.storage.keys import VaultKeyError
from client.storage.vault_store import VaultFullError
from policy.round_contract import DEFAULT_CONTEXT_LENGTH
from privacy.accountants import (
    ADJACENCY_EXAMPLE,
    ADJACENCY_USER,
    UNIT_LOCAL,
    UNIT_USER,
    adjacency_action,
    epsilon_per_action,
    unit_action,
)
from privacy.ledger import Bucket, BudgetRule, DeviceLedger
from privacy.policy import PrivacyPolicy
from privacy.renyi_filter import lifetime_rounds, window


def unit_lifetime(retention_days: float) -> str:
    """The unit of the ledger's cap: one example, over the whole time it is kept."""
    return f"{UNIT_LOCAL}, over the {retention_days:g} days it is kept"


def _day_text(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def budget_figures(
    ledger: DeviceLedger | None,
    policy: PrivacyPolicy,
    employee_cap: float | None,
    held: frozenset[int] = frozenset(),
    now: float | None = None,
) -> dict[str, Any]:
    """Every figure a ledger implies, each with its unit, adjacency and delta, and per day.

    Example-level is what the ledger's filter caps, per day bucket of data: an example
    is charged to each day it was built from, so its loss is at most its days' spend.
    One recorded action sits in up to K+1 examples, so its figure is group privacy over
    the most-spent day's history; the user-level figure is the campaign's (the server
    stops before the policy's target), or none when the policy adds no central noise.
    """
    now = time.time() if now is None else now
    delta = policy.privacy.delta
    rule = BudgetRule.from_policy(policy, employee_cap)
    cap = rule.cap
    retention = policy.data.retention_days
    buckets = (
        ledger.buckets(rule, now, held)
        if ledger is not None
        else [Bucket(d, 0.0, 0.0, d in held) for d in window(now, rule.retention_days)]
    )
    spent = max((b.epsilon for b in buckets), default=0.0)
    fullest = max(buckets, key=lambda b: b.fraction, default=None)
    action_history = (
        ledger.history_of(fullest.day) if ledger is not None and fullest is not None else []
    )
    central = policy.training.central_noise_multiplier > 0
    t = policy.training
    return {
        "epsilon_spent": spent,
        "epsilon_cap": cap,
        "epsilon_left": max(0.0, cap - spent),
        "policy_cap": policy.privacy.device_epsilon_cap,
        "employee_cap": employee_cap,
        "delta": delta,
        "unit": unit_lifetime(retention),
        "adjacency": ADJACENCY_EXAMPLE,
        "retention_days": retention,
        "rounds_per_day": t.rounds_per_day,
        "lifetime_rounds": lifetime_rounds(t.rounds_per_day, retention),
        "renyi_orders": list(rule.renyi.orders),
        "days": [
            {
                "day": _day_text(b.day),
                "epsilon_spent": b.epsilon,
                "epsilon_left": max(0.0, cap - b.epsilon),
                "fraction": b.fraction,
                "holds_data": b.held,
            }
            for b in buckets
        ],
        "epsilon_per_action": epsilon_per_action(action_history, delta, DEFAULT_CONTEXT_LENGTH),
        "unit_per_action": unit_action(DEFAULT_CONTEXT_LENGTH),
        "adjacency_per_action": adjacency_action(DEFAULT_CONTEXT_LENGTH),
        "epsilon_user": policy.privacy.user_epsilon_target if central else None,
        "user_noise_by_devices": central and policy.training.distributed_noise,
        "unit_user": UNIT_USER,
        "adjacency_user": ADJACENCY_USER,
        "entries": len(ledger.entries) if ledger is not None else 0,
        "resets": [asdict(r) for r in ledger.resets] if ledger is not None else [],
        "ledger_writes": ledger.counter if ledger is not None else 0,
        "anchor": ledger.anchor_where if ledger is not None else None,
    }


def budget_report(device: DeviceRecords, policy: PrivacyPolicy) -> dict[str, Any]:
    """``budget_figures`` of ``device``'s ledger and the days its vault holds.

    Raises ``VaultKeyError`` or ``LedgerError`` when the ledger cannot be read.
    """
    try:
        held = device.held_days()
    except (VaultKeyError, VaultFullError):
        held = frozenset()
    return budget_figures(device.ledger(), policy, device.employee_cap(), held)


__all__ = ["budget_figures", "budget_report", "unit_lifetime"]
