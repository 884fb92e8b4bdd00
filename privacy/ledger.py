"""The device ledger: every local DP-SGD round, persisted and encrypted.

Append-only entries (round, noise multiplier, sample rate, steps, epsilon after,
policy hash, time), sealed with AES-256-GCM under a key the caller passes (the
client derives it from its vault key), written atomically. ``check_round`` is
the gate the trainer calls before any training happens.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.accountants import HistoryEntry, epsilon_local

_AAD: Final = b"hearth-device-ledger-v1"


class LedgerError(Exception):
    """The ledger cannot be read (tampered, truncated or another key)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One local round as it was spent."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_after: float
    delta: float
    policy_hash: str
    time: float


@dataclass(frozen=True)
class Decision:
    """Whether a planned round fits the budget, and why not."""

    allowed: bool
    epsilon_now: float
    epsilon_after: float
    cap: float
    reason: str = ""


class DeviceLedger:
    """What this device has spent, across rounds and restarts."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._aead = AESGCM(key)
        self.entries: list[LedgerEntry] = self._load()

    def _load(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        blob = self.path.read_bytes()
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], _AAD)
            return [LedgerEntry(**item) for item in json.loads(plain)]
        except (InvalidTag, ValueError, TypeError):
            raise LedgerError(
                f"the privacy ledger {self.path.name} failed authentication; "
                "training is refused until it is restored"
            ) from None

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        nonce = os.urandom(12)
        plain = json.dumps([asdict(e) for e in self.entries]).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(nonce + self._aead.encrypt(nonce, plain, _AAD))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)

    def history(self) -> list[HistoryEntry]:
        """(noise, sample rate, steps) of every recorded round."""
        return [(e.noise_multiplier, e.sample_rate, e.steps) for e in self.entries]

    def spent(self, delta: float) -> float:
        """Epsilon of the composition of all recorded rounds (one example on this device)."""
        return epsilon_local(self.history(), delta)

    def recorded_spend(self) -> float:
        """Epsilon after the newest entry, as recorded with it (no accountant is run).

        Equal to ``spent(delta)`` at the entries' delta; for records written on a hot
        path (an upload), where recomposing the history would import Opacus and torch.
        """
        return self.entries[-1].epsilon_after if self.entries else 0.0

    def would_spend(self, planned: HistoryEntry, delta: float) -> float:
        """Epsilon after a hypothetical extra round."""
        return epsilon_local([*self.history(), planned], delta)

    def record(
        self, server_round: int, planned: HistoryEntry, delta: float, policy_hash: str
    ) -> LedgerEntry:
        """Append one spent round and persist it before anything is sent."""
        z, q, steps = planned
        entry = LedgerEntry(
            round=server_round,
            noise_multiplier=z,
            sample_rate=q,
            steps=steps,
            epsilon_after=self.would_spend(planned, delta),
            delta=delta,
            policy_hash=policy_hash,
            time=time.time(),
        )
        self.entries.append(entry)
        self._save()
        return entry

    def state_dict(self) -> dict[str, Any]:
        """Entries as plain data (for the dashboard and tests)."""
        return {"entries": [asdict(e) for e in self.entries]}


def effective_cap(policy_cap: float, employee_cap: float | None) -> float:
    """The stricter of the policy's cap and the employee's own."""
    return policy_cap if employee_cap is None else min(policy_cap, employee_cap)


def check_round(ledger: DeviceLedger, planned: HistoryEntry, delta: float, cap: float) -> Decision:
    """Refuse a round, before it trains, if it would push epsilon past ``cap``."""
    now = ledger.spent(delta)
    after = ledger.would_spend(planned, delta)
    if not math.isfinite(after) or after > cap:
        return Decision(
            False,
            now,
            after,
            cap,
            f"budget exhausted: this round would bring epsilon to {after:.2f}, "
            f"over the cap of {cap:g} (delta {delta:g}, one example on this device)",
        )
    return Decision(True, now, after, cap)
