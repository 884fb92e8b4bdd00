"""The user-level accountant: DP-FedAvg with Poisson client sampling, over a horizon.

Unit: one user (all of one laptop's data), add/remove adjacency. Each noised round
is the sampled Gaussian mechanism: every enrolled device joins with probability
``q`` (the server's OS CSPRNG, ``server.campaign.poisson_cohort``), clipped updates
are summed, and the sum carries Gaussian noise of std ``z x C`` (added by the
devices in shares under ``distributed_noise``, else by the server), divided by the
fixed ``q x N``. Rounds compose with Google's ``dp-accounting`` (RDP, or PLD).

Two figures, because two parties see different things:

- facing readers of the model and checkpoints: amplified by the sampling, which
  they do not see (``epsilon_readers``);
- facing the server, which picks the cohort and sees who replied: no
  amplification; a user who joined ``k`` rounds is protected by ``k`` unsampled
  Gaussian releases (``epsilon_server``). The campaign reports the worst case, a
  user who joined every round. The server can claim it only when it never saw a
  sum without the noise: distributed noise under SecAgg+.

The rounds are kept in a ledger that outlives campaigns (``UserLevelLedger``):
the budget is for any window of ``horizon_days`` (the policy's), not per campaign.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from privacy.accountants import UserAccountant, smallest_noise

UNIT: Final = "one user (all of one laptop's data), over the policy's horizon"
ADJACENCY_READERS: Final = "add/remove one user (Poisson client sampling)"
ADJACENCY_SERVER: Final = "add/remove one user (no sampling amplification)"
# dp-accounting's RDP fails to converge at fractional orders near 1.
_RDP_ORDERS: Final = [1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, *range(5, 64), 80.0, 128.0, 256.0]


@dataclass(frozen=True)
class NoisedRound:
    """One round of the sampled Gaussian mechanism, as the ledger keeps it."""

    noise: float
    sampling: float
    time: float = 0.0
    campaign: str = ""


def _epsilon(
    events: Iterable[tuple[float, float]], delta: float, accountant: UserAccountant
) -> float:
    import dp_accounting  # noqa: PLC0415 (seconds to import; see privacy.accountants)

    counts = Counter((float(z), float(q)) for z, q in events)
    if not counts:
        return 0.0
    if any(z <= 0 for z, _ in counts):
        return math.inf
    parts = []
    for (z, q), rounds in counts.items():
        gaussian = dp_accounting.GaussianDpEvent(z)
        event = gaussian if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        parts.append(dp_accounting.SelfComposedDpEvent(event, rounds))
    acc: dp_accounting.PrivacyAccountant = (
        dp_accounting.rdp.RdpAccountant(orders=_RDP_ORDERS)
        if accountant == "rdp"
        else dp_accounting.pld.PLDAccountant()
    )
    acc.compose(dp_accounting.ComposedDpEvent(parts))
    return float(acc.get_epsilon(delta))


def epsilon_readers(
    rounds: Sequence[NoisedRound], delta: float, accountant: UserAccountant = "rdp"
) -> float:
    """Epsilon facing readers of the model: every round amplified by its sampling."""
    return _epsilon(((r.noise, r.sampling) for r in rounds), delta, accountant)


def epsilon_server(
    rounds: Sequence[NoisedRound], delta: float, accountant: UserAccountant = "rdp"
) -> float:
    """Epsilon facing the server, for a user who joined every one of ``rounds``."""
    return _epsilon(((r.noise, 1.0) for r in rounds), delta, accountant)


def noise_for_target(
    target: float, sampling: float, rounds: int, delta: float, accountant: UserAccountant = "rdp"
) -> float:
    """The least noise multiplier keeping ``rounds`` rounds at ``sampling`` within ``target``."""
    return smallest_noise(
        lambda z: epsilon_readers([NoisedRound(z, sampling)] * rounds, delta, accountant), target
    )


def rounds_within(
    target: float,
    noise: float,
    sampling: float,
    delta: float,
    spent: Sequence[NoisedRound] = (),
    most: int = 100_000,
) -> int:
    """How many more rounds at (``noise``, ``sampling``) keep epsilon within ``target``."""

    def fits(k: int) -> bool:
        return epsilon_readers([*spent, *[NoisedRound(noise, sampling)] * k], delta) <= target

    if not fits(0):
        return 0
    low, high = 0, 1
    while high <= most and fits(high):
        low, high = high, high * 2
    high = min(high, most + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


@dataclass(frozen=True)
class UtilityBound:
    """What a utility sweep says a plan may cost: the most noise std on the averaged update.

    Read from ``hearth-sim sweep --user-level``'s JSON: the largest measured
    ``z x clip / (q x N)`` at which every point up to it lost at most ``max_loss`` of the
    no-noise top-1 (``None``: even the least-noised point lost more). The std is what
    carries over to another population and cohort; the rounds trained do not.
    """

    max_noise_std: float | None
    max_loss: float
    population: int
    sampling: float
    rounds: int
    source: Path


def utility_bound(path: Path, max_loss: float) -> UtilityBound:
    """Read a user-level utility sweep (``ValueError`` with what to do when it is not one)."""
    try:
        data = json.loads(path.read_text())
        setup = data["setup"]
        points = sorted(
            (
                (float(p["noise_std_on_mean"]), float(p["relative_loss"]))
                for p in data["points"]
                if float(p["noise_multiplier"]) > 0
            ),
        )
        bound = UtilityBound(
            None,
            max_loss,
            int(setup["population"]),
            float(setup["sampling"]),
            int(setup["campaign_rounds"]),
            path,
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"{path} is not a user-level utility sweep ({exc}); write one with "
            "`hearth-sim sweep --user-level`"
        ) from None
    best = None
    for std, loss in points:
        if not loss <= max_loss:  # a NaN loss (no baseline) meets nothing
            break
        best = std
    return UtilityBound(best, max_loss, bound.population, bound.sampling, bound.rounds, path)


class UserLevelLedger:
    """Every noised round within the horizon, kept beside the server's state.

    A campaign starts from what earlier campaigns spent within the policy's
    horizon, so running many short campaigns does not reset the budget. The file
    is an append-only JSON list; a damaged file stops the campaign rather than
    restarting the budget at zero.
    """

    def __init__(self, path: Path, horizon_days: float) -> None:
        self.path = path
        self.horizon_seconds = horizon_days * 86400.0

    def all_rounds(self) -> list[NoisedRound]:
        """Every round recorded (``ValueError`` when the file is damaged)."""
        if not self.path.exists():
            return []
        try:
            return [NoisedRound(**entry) for entry in json.loads(self.path.read_text())]
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"the user-level ledger {self.path} is damaged; restore it (the user-level "
                "budget cannot restart at zero)"
            ) from exc

    def rounds(self, now: float | None = None, exclude_campaign: str = "") -> list[NoisedRound]:
        """Rounds within the horizon before ``now``, other than ``exclude_campaign``'s."""
        now = time.time() if now is None else now
        return [
            r
            for r in self.all_rounds()
            if now - r.time <= self.horizon_seconds and r.campaign != exclude_campaign
        ]

    def record(self, entry: NoisedRound) -> None:
        """Append one round (atomically: written aside, then renamed)."""
        entries = [asdict(r) for r in self.all_rounds()]
        entries.append(asdict(entry))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(entries) + "\n")
        tmp.replace(self.path)


__all__ = [
    "ADJACENCY_READERS",
    "ADJACENCY_SERVER",
    "UNIT",
    "NoisedRound",
    "UserLevelLedger",
    "UtilityBound",
    "epsilon_readers",
    "epsilon_server",
    "noise_for_target",
    "rounds_within",
    "utility_bound",
]
