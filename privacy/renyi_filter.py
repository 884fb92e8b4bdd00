"""A Rényi filter over day buckets: every example's loss bounded over its lifetime.

Data lives on a laptop for ``retention_days``; each round reads only what the vault
holds then. The ledger charges every round to every day bucket its data could come
from (every day of the retention window at that moment, and any other day the vault
holds), and a bucket goes when its day leaves the window. One example is built from
actions of at most a few consecutive days, so every round that could read it is
charged to each of its days: its loss is at most any one of its buckets'.

Why this holds when rounds are chosen adaptively (which rounds run, when, with how
much noise, depends on what earlier rounds released): Feldman and Zrnic, "Individual
Privacy Accounting via a Rényi Filter" (NeurIPS 2021), Theorem 3.3: for a *fixed*
order alpha and budget B, an adaptive composition in which an individual takes part
only while the sum of its per-round RDP at alpha stays within B is (alpha, B)-RDP for
that individual. By Markov's inequality on exp((alpha - 1) L), its privacy loss L
exceeds B + log(1/delta') / (alpha - 1) with probability at most delta'. A bucket here
is allowed to take a round while *some* order of the policy's fixed set Lambda keeps
its composed RDP within B_alpha = cap - log(|Lambda| / delta) / (alpha - 1). The
output of the whole run coincides with that of the single-order filter at whichever
order stayed within budget, so a union bound over the |Lambda| orders gives
P[L > cap] <= |Lambda| x delta / |Lambda| = delta: (cap, delta)-DP per example. (This
is the multi-order filter of Lécuyer, "Practical Privacy Filters and Odometers with
Rényi DP", 2021, and of Whitehouse et al., "Fully-Adaptive Composition in DP", 2023.)
The orders are the policy's, fixed before any round: choosing the best order after
the fact (what Opacus' ``get_epsilon`` does) or a PLD accountant is not valid under
adaptive stopping, which is why the filter does neither.

Everything the filter decides is a function of when rounds ran and what they cost,
never of which days hold data: the window's days are charged whether or not the vault
holds anything for them, so a refusal reveals nothing about the data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # numpy is imported where it is used: the recorder loads policies without it
    import numpy as np
    from numpy.typing import NDArray

DAY_SECONDS: Final = 86400.0
# The policy's default orders: integers, where the optimum lies for caps from about 2 to 100
# (dp-accounting, the independent check, does not converge at fractional orders below 2).
DEFAULT_ORDERS: Final[tuple[float, ...]] = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0)

# (noise multiplier, sample rate, steps): what one ledger entry ran.
Charge = tuple[float, float, int]


def day_of(wall_time: float) -> int:
    """The UTC day (days since 1970-01-01) a wall-clock time falls in."""
    return math.floor(wall_time / DAY_SECONDS)


def window(now: float, retention_days: float) -> range:
    """Days whose data may still be held at ``now``: from the retention cutoff's day to today."""
    return range(day_of(now - retention_days * DAY_SECONDS), day_of(now) + 1)


def lifetime_rounds(rounds_per_day: float, retention_days: float) -> int:
    """How many rounds a day's bucket is charged at the expected pace.

    A day is in the window from its first second until retention_days after its last,
    so on ceil(retention_days) + 1 calendar days.
    """
    return max(1, math.ceil(rounds_per_day * (math.ceil(retention_days) + 1) - 1e-9))


@functools.lru_cache(maxsize=4096)
def _rdp_step(sample_rate: float, noise: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: PLC0415 (torch: slow)

    return tuple(
        float(v)
        for v in rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise, steps=1, orders=list(orders)
        )
    )


def rdp_of(charges: Iterable[Charge], orders: Sequence[float]) -> NDArray[np.float64]:
    """RDP of the composition of ``charges`` at each order (Mironov et al. 2019, via Opacus)."""
    import numpy as np  # noqa: PLC0415

    total = np.zeros(len(orders), dtype=np.float64)
    key = tuple(float(a) for a in orders)
    for noise, rate, steps in charges:
        if noise <= 0:
            return np.full(len(orders), math.inf)
        total += int(steps) * np.asarray(_rdp_step(float(rate), float(noise), key))
    return total


@dataclass(frozen=True)
class RenyiFilter:
    """The (cap, delta) filter at the policy's fixed Rényi orders."""

    orders: tuple[float, ...]
    cap: float
    delta: float

    def __post_init__(self) -> None:
        if not self.orders or any(a <= 1 for a in self.orders):
            raise ValueError("Rényi orders must be above 1")
        if not 0 < self.delta < 1 or self.cap <= 0:
            raise ValueError("the filter needs a positive cap and delta in (0, 1)")

    def _slack(self) -> NDArray[np.float64]:
        """log(|Lambda| / delta) / (alpha - 1): what each order's conversion costs."""
        import numpy as np  # noqa: PLC0415

        alphas = np.asarray(self.orders, dtype=np.float64)
        slack: NDArray[np.float64] = math.log(len(self.orders) / self.delta) / (alphas - 1)
        return slack

    def has_room(self) -> bool:
        """Whether some order's budget is positive (``budgets() > 0`` without numpy)."""
        slack = math.log(len(self.orders) / self.delta)
        return any(self.cap - slack / (a - 1) > 0 for a in self.orders)

    def budgets(self) -> NDArray[np.float64]:
        """B_alpha: the most RDP a bucket may compose at each order (negative: never)."""
        import numpy as np  # noqa: PLC0415

        return np.asarray(self.cap - self._slack(), dtype=np.float64)

    def admits(self, spent: NDArray[np.float64], charge: NDArray[np.float64]) -> bool:
        """Whether a bucket that composed ``spent`` may also take ``charge``."""
        import numpy as np  # noqa: PLC0415

        after = spent + charge
        return bool(np.any(np.isfinite(after) & (after <= self.budgets())))

    def epsilon(self, spent: NDArray[np.float64]) -> float:
        """How far along a bucket is, as an epsilon: min over the fixed orders of RDP + slack.

        It reaches the cap exactly when the filter stops admitting at every order; the
        guarantee itself is always (cap, delta), whatever this shows.
        """
        import numpy as np  # noqa: PLC0415

        if not np.any(spent > 0):
            return 0.0
        value = float(np.min(spent + self._slack()))
        return value if math.isfinite(value) else math.inf

    def fraction(self, spent: NDArray[np.float64]) -> float:
        """Share of the budget used, 0..1, at the order with the most room left."""
        import numpy as np  # noqa: PLC0415

        budgets = self.budgets()
        usable = budgets > 0
        if not np.any(usable):
            return 1.0
        return float(min(1.0, np.min(spent[usable] / budgets[usable])))


def filter_for(orders: Sequence[float], cap: float, delta: float) -> RenyiFilter:
    """The filter of a policy's orders at ``cap``."""
    return RenyiFilter(tuple(float(a) for a in orders), float(cap), float(delta))


RoundCharges = tuple[tuple[float, int], ...]  # (sample rate, steps) a round, at its noise


def rounds_rdp(
    orders: Sequence[float],
    noise: float,
    round_charges: RoundCharges,
    evaluation: Charge | None,
    rounds: int,
) -> NDArray[np.float64]:
    """RDP of ``rounds`` whole rounds: ``round_charges`` at ``noise``, each with its evaluation."""
    charges: list[Charge] = [(noise, q, s * rounds) for q, s in round_charges]
    if evaluation is not None:
        charges.append((evaluation[0], evaluation[1], evaluation[2] * rounds))
    return rdp_of(charges, orders)


@functools.lru_cache(maxsize=64)
def lifetime_noise(
    renyi: RenyiFilter,
    round_charges: RoundCharges,
    evaluation: Charge | None,
    rounds: int,
    floor: float,
    ceiling: float = 64.0,
) -> float:
    """The least noise, at least ``floor``, that lets one bucket take ``rounds`` whole rounds.

    A round is ``round_charges`` ((sample rate, steps) at the planned noise) plus its
    ``evaluation`` release. Raises ``PlanningError`` when even ``ceiling`` cannot.
    """
    import numpy as np  # noqa: PLC0415

    from privacy.accountants import PlanningError, smallest_noise  # noqa: PLC0415

    def fits(z: float) -> bool:
        spent = rounds_rdp(renyi.orders, z, round_charges, evaluation, rounds)
        return renyi.admits(np.zeros_like(spent), spent)

    start = max(floor, 1e-3)
    if fits(start):
        return floor
    if not fits(ceiling):
        raise PlanningError(
            f"even noise {ceiling:g} cannot fit {rounds} rounds per day of data in epsilon "
            f"{renyi.cap:g}"
        )
    return smallest_noise(lambda z: 0.0 if fits(z) else math.inf, 1.0, high=ceiling, tol=1e-3)


def as_json(values: NDArray[np.float64]) -> list[Any]:
    """An RDP vector as JSON (infinite orders as null)."""
    return [float(v) if math.isfinite(v) else None for v in values]
