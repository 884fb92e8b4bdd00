"""The device ledger: what every local DP release cost each day of data, persisted and anchored.

Entries (round, kind, noise, sample rate, steps, the day range charged, policy hash,
time) are sealed with AES-256-GCM under a key the caller passes and written
atomically. Each entry is charged to every day bucket its data could come from
(``privacy.renyi_filter``); ``check_round`` is the gate that runs before any
training, and a bucket goes when its day leaves the retention window.

Rollback: every write bumps a counter and chains the previous file's SHA-256; an
anchor kept outside the file (the OS keyring, else a sealed file beside it: see
``LedgerAnchor``) holds the newest (counter, digest). A ledger that is missing,
older or not the anchored one is refused until ``reset_ledger``, which is recorded
in the new ledger itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from numpy.typing import NDArray

from policy.durable import fsync_directory
from privacy.accountants import HistoryEntry
from privacy.renyi_filter import (
    Charge,
    RenyiFilter,
    RoundCharges,
    day_of,
    filter_for,
    rdp_of,
    window,
)

if TYPE_CHECKING:
    from privacy.policy import PrivacyPolicy

_AAD_V1: Final = b"hearth-device-ledger-v1"
_AAD: Final = b"hearth-device-ledger-v2"
_ANCHOR_AAD: Final = b"hearth-ledger-anchor-v1"
VERSION: Final = 2
RESET_HINT: Final = "run `hearth budget reset --i-understand` to start a new ledger (logged)"


class LedgerError(Exception):
    """The ledger cannot be read (tampered, truncated or another key)."""


class LedgerRollbackError(LedgerError):
    """The ledger is missing, older than the anchored one, or not the anchored one."""


@dataclass(frozen=True)
class LedgerEntry:
    """One local release as it was charged: a training round, an evaluation, or migrated."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_after: float  # the most-spent bucket's epsilon after this entry
    delta: float
    policy_hash: str
    time: float
    first_day: int = 0  # charged to every day bucket first_day..last_day (UTC days)
    last_day: int = 0
    kind: str = "train"

    def charge(self) -> HistoryEntry:
        """(noise, sample rate, steps): what the accountants compose."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


@dataclass(frozen=True)
class LedgerReset:
    """A deliberate reset: when, why, and how many entries it cleared."""

    time: float
    reason: str
    entries_cleared: int


@dataclass(frozen=True)
class BudgetRule:
    """What the ledger is checked against: the filter at the cap and the data's lifetime."""

    renyi: RenyiFilter
    retention_days: float

    @classmethod
    def from_policy(cls, policy: PrivacyPolicy, employee_cap: float | None = None) -> BudgetRule:
        """The policy's orders, delta and retention, at the stricter of the two caps."""
        cap = effective_cap(policy.privacy.device_epsilon_cap, employee_cap)
        renyi = filter_for(policy.privacy.renyi_orders, cap, policy.privacy.delta)
        return cls(renyi, policy.data.retention_days)

    @property
    def cap(self) -> float:
        """The epsilon every example is held to over its lifetime."""
        return self.renyi.cap


@dataclass(frozen=True)
class Bucket:
    """One day of data: what the rounds that could read it spent."""

    day: int
    epsilon: float
    fraction: float  # of the budget, at the order with the most room
    held: bool  # whether the vault holds data of this day


@dataclass(frozen=True)
class Decision:
    """Whether a planned round fits every bucket it reads, and why not."""

    allowed: bool
    epsilon_now: float
    epsilon_after: float
    cap: float
    reason: str = ""
    days: tuple[int, ...] = ()


class LedgerAnchor(Protocol):
    """Where the newest (counter, digest) lives, out of reach of a copy of the ledger file."""

    where: str

    def read(self) -> tuple[int, str] | None:
        """The anchored (counter, SHA-256 hex), or None when nothing was anchored."""

    def write(self, counter: int, digest: str) -> None:
        """Anchor a new (counter, digest)."""


class FileAnchor:
    """The anchor sealed in a file beside the ledger (devices without an OS keyring).

    It catches a deleted or copied-back ledger file, not a restore of the whole
    privacy directory (the anchor comes back with it).
    """

    where = "the anchor file beside the ledger"

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._aead = AESGCM(key)

    def read(self) -> tuple[int, str] | None:
        """The sealed (counter, digest), or None when there is no anchor file."""
        if not self.path.exists():
            return None
        blob = self.path.read_bytes()
        try:
            data = json.loads(self._aead.decrypt(blob[:12], blob[12:], _ANCHOR_AAD))
            return int(data["counter"]), str(data["digest"])
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise LedgerRollbackError(
                f"the privacy ledger's anchor {self.path.name} failed authentication; {RESET_HINT}"
            ) from None

    def write(self, counter: int, digest: str) -> None:
        """Seal and atomically replace the anchor."""
        plain = json.dumps({"counter": counter, "digest": digest}).encode()
        nonce = os.urandom(12)
        _write_atomic(self.path, nonce + self._aead.encrypt(nonce, plain, _ANCHOR_AAD))


def _write_atomic(path: Path, blob: bytes) -> None:
    """Replace ``path`` with ``blob``, durable when this returns (before an update is sent).

    The file's bytes are fsynced before the rename and the directory after it: without
    the second, a crash could bring back the old ledger, without a spend already sent.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fsync_directory(path.parent)


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@dataclass
class _State:
    counter: int = 0
    previous_digest: str = ""
    retired_before: int | None = None
    entries: list[LedgerEntry] = field(default_factory=list)
    resets: list[LedgerReset] = field(default_factory=list)
    migrated: bool = False


def _seal(aead: AESGCM, state: _State) -> bytes:
    plain = json.dumps(
        {
            "version": VERSION,
            "counter": state.counter,
            "previous_digest": state.previous_digest,
            "retired_before": state.retired_before,
            "entries": [asdict(e) for e in state.entries],
            "resets": [asdict(r) for r in state.resets],
        }
    ).encode()
    nonce = os.urandom(12)
    return nonce + aead.encrypt(nonce, plain, _AAD)


def _unseal(aead: AESGCM, blob: bytes, name: str) -> _State:
    try:
        data = json.loads(aead.decrypt(blob[:12], blob[12:], _AAD))
        return _State(
            counter=int(data["counter"]),
            previous_digest=str(data["previous_digest"]),
            retired_before=data["retired_before"],
            entries=[LedgerEntry(**e) for e in data["entries"]],
            resets=[LedgerReset(**r) for r in data["resets"]],
        )
    except InvalidTag:
        pass
    except (ValueError, KeyError, TypeError):
        raise LedgerError(
            f"the privacy ledger {name} is damaged; training is refused until it is restored "
            f"or reset ({RESET_HINT})"
        ) from None
    try:  # a ledger of hearth before day buckets: every round charged to every day so far
        old = json.loads(aead.decrypt(blob[:12], blob[12:], _AAD_V1))
        entries = [
            LedgerEntry(**{**e, "first_day": 0, "last_day": day_of(e["time"]), "kind": "v1"})
            for e in old
        ]
        return _State(entries=entries, migrated=True)
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise LedgerError(
            f"the privacy ledger {name} failed authentication; training is refused until it "
            f"is restored or reset ({RESET_HINT})"
        ) from None


class DeviceLedger:
    """What this device has spent on each day of its data, across rounds and restarts."""

    def __init__(self, path: Path, key: bytes, anchor: LedgerAnchor | None = None) -> None:
        self.path = path
        self._aead = AESGCM(key)
        self.anchor = anchor
        self._state = self._load()

    @property
    def entries(self) -> list[LedgerEntry]:
        """Every release still recorded, oldest first."""
        return self._state.entries

    @property
    def resets(self) -> list[LedgerReset]:
        """Every deliberate reset, oldest first."""
        return self._state.resets

    @property
    def counter(self) -> int:
        """How many times this ledger was written (never decreases, resets included)."""
        return self._state.counter

    @property
    def migrated(self) -> bool:
        """Whether it was read from an older (version 1) ledger."""
        return self._state.migrated

    def _load(self) -> _State:
        anchored = self.anchor.read() if self.anchor is not None else None
        if not self.path.exists():
            if anchored is not None and anchored[0] > 0:
                raise LedgerRollbackError(
                    f"the privacy ledger {self.path.name} is missing but {self.anchor_where} "
                    f"records write {anchored[0]} of it; training is refused: {RESET_HINT}"
                )
            return _State()
        blob = self.path.read_bytes()
        state = _unseal(self._aead, blob, self.path.name)
        if self.anchor is None or state.migrated:
            return state
        digest = _digest(blob)
        if anchored is None:
            if state.counter == 0:
                return state
            raise LedgerRollbackError(
                f"the privacy ledger's anchor in {self.anchor_where} is missing; "
                f"training is refused: {RESET_HINT}"
            )
        counter, anchored_digest = anchored
        if state.counter == counter and digest == anchored_digest:
            return state
        if state.counter == counter + 1 and state.previous_digest == anchored_digest:
            self.anchor.write(state.counter, digest)  # a crash between the two writes
            return state
        raise LedgerRollbackError(
            f"the privacy ledger {self.path.name} is an older or altered copy (write "
            f"{state.counter}, {self.anchor_where} records write {counter}); training is "
            f"refused: {RESET_HINT}"
        )

    @property
    def anchor_where(self) -> str:
        """Where the anchor lives, in words."""
        return self.anchor.where if self.anchor is not None else "no anchor"

    def _save(self) -> None:
        previous = self.path.read_bytes() if self.path.exists() else b""
        self._state.previous_digest = _digest(previous) if previous else ""
        self._state.counter += 1
        blob = _seal(self._aead, self._state)
        _write_atomic(self.path, blob)
        if self.anchor is not None:
            self.anchor.write(self._state.counter, _digest(blob))
        self._state.migrated = False

    def history(self) -> list[HistoryEntry]:
        """(noise, sample rate, steps) of every recorded release."""
        return [e.charge() for e in self.entries]

    def history_of(self, day: int) -> list[HistoryEntry]:
        """(noise, sample rate, steps) of the releases charged to ``day``."""
        return [e.charge() for e in self.entries if e.first_day <= day <= e.last_day]

    def rdp_of(self, day: int, renyi: RenyiFilter) -> NDArray[np.float64]:
        """The composed RDP of ``day``'s bucket at the filter's orders."""
        return rdp_of(self.history_of(day), renyi.orders)

    def live_days(self, rule: BudgetRule, now: float, held: Iterable[int] = ()) -> list[int]:
        """Days with a bucket at ``now``: the retention window and any held day not retired."""
        days = set(window(now, rule.retention_days)) | set(held)
        floor = self._state.retired_before
        return sorted(d for d in days if floor is None or d >= floor)

    def buckets(self, rule: BudgetRule, now: float, held: Iterable[int] = ()) -> list[Bucket]:
        """Spent and remaining for every live day, oldest first."""
        held_set = set(held)
        out = []
        for day in self.live_days(rule, now, held_set):
            spent = self.rdp_of(day, rule.renyi)
            out.append(
                Bucket(day, rule.renyi.epsilon(spent), rule.renyi.fraction(spent), day in held_set)
            )
        return out

    def spent(self, rule: BudgetRule, now: float | None = None) -> float:
        """The most-spent live bucket's epsilon (one example, over the days it is kept)."""
        buckets = self.buckets(rule, time.time() if now is None else now)
        return max((b.epsilon for b in buckets), default=0.0)

    def recorded_spend(self) -> float:
        """The most-spent bucket's epsilon as recorded with the newest entry (no accountant runs).

        For records written on a hot path (an upload), where recomposing the history
        would import Opacus and torch.
        """
        return self.entries[-1].epsilon_after if self.entries else 0.0

    def record(
        self,
        server_round: int,
        planned: Sequence[HistoryEntry] | HistoryEntry,
        rule: BudgetRule,
        policy_hash: str,
        *,
        held: Iterable[int] = (),
        now: float | None = None,
        kind: str = "train",
    ) -> list[LedgerEntry]:
        """Append what a release spent, charged to every day it could read, before it is sent."""
        now = time.time() if now is None else now
        held_set = set(held)
        days = self.charged_days(rule, now, held_set)
        charges = _as_charges(planned)
        after_max = _max_after(self, rule, days, charges)
        added = [
            LedgerEntry(
                round=server_round,
                noise_multiplier=z,
                sample_rate=q,
                steps=steps,
                epsilon_after=after_max,
                delta=rule.renyi.delta,
                policy_hash=policy_hash,
                time=now,
                first_day=days[0],
                last_day=days[-1],
                kind=kind,
            )
            for z, q, steps in charges
        ]
        self._state.entries.extend(added)
        start = window(now, rule.retention_days).start
        floor = min([start, *held_set])
        self._state.retired_before = max(floor, self._state.retired_before or floor)
        self._save()
        return added

    def charged_days(self, rule: BudgetRule, now: float, held: Iterable[int] = ()) -> list[int]:
        """Every day a release at ``now`` could read: the window, and any other held day."""
        live = self.live_days(rule, now, held)
        return list(range(live[0], live[-1] + 1))

    def retired(self, held: Iterable[int]) -> list[int]:
        """Held days whose bucket already went (data that retention should have removed)."""
        floor = self._state.retired_before
        return sorted(d for d in set(held) if floor is not None and d < floor)

    def state_dict(self) -> dict[str, Any]:
        """Entries and resets as plain data (for the dashboard and tests)."""
        return {
            "counter": self.counter,
            "entries": [asdict(e) for e in self.entries],
            "resets": [asdict(r) for r in self.resets],
        }


def _as_charges(planned: Sequence[HistoryEntry] | HistoryEntry) -> list[HistoryEntry]:
    """One (noise, rate, steps) triple or several, as a list."""
    if len(planned) == 3 and not isinstance(planned[0], tuple | list):
        z, q, steps = planned
        return [(float(z), float(q), int(steps))]  # type: ignore[arg-type]
    return [(float(z), float(q), int(s)) for z, q, s in planned]  # type: ignore[misc]


def _day_rdps(
    ledger: DeviceLedger, rule: BudgetRule, days: Sequence[int]
) -> list[NDArray[np.float64]]:
    """Each day's composed RDP, composed once per distinct history (most days share one)."""
    composed: dict[tuple[HistoryEntry, ...], NDArray[np.float64]] = {}
    out = []
    for day in days:
        history = tuple(ledger.history_of(day))
        if history not in composed:
            composed[history] = rdp_of(history, rule.renyi.orders)
        out.append(composed[history])
    return out


def _max_after(
    ledger: DeviceLedger,
    rule: BudgetRule,
    days: Sequence[int],
    charges: list[HistoryEntry],
    spent: Sequence[NDArray[np.float64]] | None = None,
) -> float:
    """The most-spent day's epsilon once ``charges`` are added (``spent``: the days' RDP)."""
    charge = rdp_of(charges, rule.renyi.orders)
    spent = _day_rdps(ledger, rule, days) if spent is None else spent
    return _max_epsilon(rule, [rdp + charge for rdp in spent])


def _max_epsilon(rule: BudgetRule, rdps: Sequence[NDArray[np.float64]]) -> float:
    """The largest epsilon among ``rdps``, each distinct vector converted once."""
    epsilons: dict[bytes, float] = {}
    for rdp in rdps:
        key = rdp.tobytes()
        if key not in epsilons:
            epsilons[key] = rule.renyi.epsilon(rdp)
    return max(epsilons.values(), default=0.0)


def reset_ledger(
    path: Path, key: bytes, anchor: LedgerAnchor | None, reason: str, now: float | None = None
) -> LedgerReset:
    """Start a new, empty ledger after a deliberate reset, keeping the record of resets.

    Works whatever state the old ledger is in (missing, rolled back, unreadable): the
    new one continues the anchor's counter, so no older copy is accepted afterwards.
    """
    aead = AESGCM(key)
    old = _State()
    if path.exists():
        try:
            old = _unseal(aead, path.read_bytes(), path.name)
        except LedgerError:
            old = _State()
    anchored = None
    if anchor is not None:
        try:
            anchored = anchor.read()
        except LedgerRollbackError:
            anchored = None
    event = LedgerReset(time.time() if now is None else now, reason, len(old.entries))
    state = _State(
        counter=max(old.counter, anchored[0] if anchored else 0) + 1,
        previous_digest=anchored[1] if anchored else "",
        retired_before=old.retired_before,
        entries=[],
        resets=[*old.resets, event],
    )
    blob = _seal(aead, state)
    _write_atomic(path, blob)
    if anchor is not None:
        anchor.write(state.counter, _digest(blob))
    return event


def effective_cap(policy_cap: float, employee_cap: float | None) -> float:
    """The stricter of the policy's cap and the employee's own."""
    return policy_cap if employee_cap is None else min(policy_cap, employee_cap)


def check_round(
    ledger: DeviceLedger,
    planned: Sequence[HistoryEntry] | HistoryEntry,
    rule: BudgetRule,
    *,
    held: Iterable[int] = (),
    now: float | None = None,
) -> Decision:
    """Refuse a release, before it runs, unless every day bucket it reads keeps room for it.

    Charged days are the retention window's (whether or not they hold data) and any
    other day the vault holds; a held day whose bucket already went refuses too.
    """
    now = time.time() if now is None else now
    held_set = set(held)
    cap = rule.cap
    retired = ledger.retired(held_set)
    days = ledger.charged_days(rule, now, held_set)
    charge = rdp_of(_as_charges(planned), rule.renyi.orders)
    spent = _day_rdps(ledger, rule, days)
    now_max = _max_epsilon(rule, spent)
    after = _max_after(ledger, rule, days, _as_charges(planned), spent)
    if retired:
        return Decision(
            False,
            now_max,
            after,
            cap,
            f"the vault holds data of {len(retired)} day(s) whose budget already expired; "
            "retention removes them before the next round",
            tuple(days),
        )
    full = [d for d, rdp in zip(days, spent, strict=True) if not rule.renyi.admits(rdp, charge)]
    if full or not math.isfinite(after):
        return Decision(
            False,
            now_max,
            after,
            cap,
            f"budget exhausted for {len(full)} day(s) of data: this round would bring an "
            f"example's epsilon past the cap of {cap:g} (delta {rule.renyi.delta:g}, one "
            f"example over the {rule.retention_days:g} days it is kept)",
            tuple(days),
        )
    return Decision(True, now_max, after, cap, "", tuple(days))


def planned_noise(policy: PrivacyPolicy, rule: BudgetRule) -> float:
    """The local noise that lets a day of data join every round of its lifetime, at the policy pace.

    Data-independent: a function of the policy (round shape, rounds per day, retention,
    orders) and the cap only, never of what the ledger or the vault holds, so the noise
    an update carries says nothing about either. Raises ``PlanningError`` when no noise
    up to the planner's ceiling fits (the evaluations alone pass the cap).
    """
    from privacy.renyi_filter import lifetime_noise, lifetime_rounds  # noqa: PLC0415

    t = policy.training
    rounds = lifetime_rounds(t.rounds_per_day, rule.retention_days)
    round_charges, evaluation = planned_round(policy)
    return lifetime_noise(rule.renyi, round_charges, evaluation, rounds, t.local_noise_multiplier)


def planned_round(policy: PrivacyPolicy) -> tuple[RoundCharges, Charge]:
    """The round the planner charges: ``steps`` DP-SGD steps at ``sample_rate``, one evaluation.

    As (sample rate, steps) pairs at the round's noise, and the evaluation release.
    """
    t = policy.training
    return ((t.sample_rate, t.steps),), (t.evaluation_noise_multiplier, 1.0, 1)
