"""Accountants behind one interface: local DP-SGD and user-level DP-FedAvg.

Local DP-SGD (unit: one example on one device) is accounted with Opacus' RDP or
PRV accountants over the (noise multiplier, sample rate, steps) history. One
recorded action sits in up to K+1 examples, so its figure (``epsilon_per_action``)
is group privacy over that history's RDP curve.
User-level DP over a campaign (unit: one user) is accounted with Google's
``dp-accounting`` (RDP or PLD) for a Gaussian mechanism on Poisson-sampled
cohorts, composed over rounds.

Both libraries (and numpy) are imported where they are used: importing Opacus imports torch
(seconds), and commands such as ``hearth status`` or ``hearth join`` that load
the ledger module without computing an epsilon must not pay for it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from policy.round_contract import DEFAULT_CONTEXT_LENGTH  # the K actions the model reads

if TYPE_CHECKING:
    import dp_accounting
    from numpy.typing import NDArray

LocalAccountant = Literal["rdp", "prv"]
UserAccountant = Literal["rdp", "pld"]
LOCAL_ACCOUNTANTS: Final[tuple[LocalAccountant, ...]] = ("rdp", "prv")
USER_ACCOUNTANTS: Final[tuple[UserAccountant, ...]] = ("rdp", "pld")
UNIT_LOCAL: Final = "one example on one device"
UNIT_USER: Final = "one user across the campaign"
# Which neighbouring datasets each figure compares (Opacus' and dp-accounting's
# Poisson-sampled analyses are for add/remove adjacency, not replace-one).
ADJACENCY_EXAMPLE: Final = "add/remove one example (Poisson sampling)"
ADJACENCY_USER: Final = "add/remove one user (Poisson client sampling)"
ADJACENCY_USER_VS_SERVER: Final = "add/remove one user (no sampling amplification)"

HistoryEntry = tuple[float, float, int]
# Group orders beta for epsilon_per_action (the group's RDP is read at alpha = 2^c beta):
# the optimum sits near the smallest allowed beta unless the figure is small.
_GROUP_BETAS: Final = (*(2 + i / 4 for i in range(25)), *range(9, 17), 20.0, 24.0, 32.0, 48.0, 64.0)
# Opacus' integer-order RDP overflows (binomials past 1e308) above about 1030.
_MAX_GROUP_ORDER: Final = 1000
# Orders for dp-accounting's RDP: fractional orders near 1 fail to converge there.
_RDP_ORDERS: Final = [1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, *range(5, 64), 80.0, 128.0, 256.0]


class PlanningError(ValueError):
    """A plan cannot be met (e.g. a target epsilon no noise reaches)."""


def epsilon_local(
    history: Sequence[HistoryEntry], delta: float, accountant: LocalAccountant = "rdp"
) -> float:
    """Epsilon after every (noise, sample rate, steps) round in ``history``."""
    if not history:
        return 0.0
    if any(z <= 0 for z, _, _ in history):
        return math.inf
    if accountant == "rdp":
        return _epsilon_rdp(history, delta, _opacus_orders())
    from opacus.accountants import PRVAccountant  # noqa: PLC0415 (see the module note)

    acc = PRVAccountant()  # the one other local accountant
    acc.history = [(float(z), float(q), int(s)) for z, q, s in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha" at tiny epsilon
        return float(acc.get_epsilon(delta))


# Opacus' RDPAccountant, computed the same way (its analysis functions, its orders),
# with each (sample rate, noise) pair's per-step RDP cached: a device's ledger repeats
# the same few pairs, and the fractional orders cost ~0.1 s per pair to evaluate.
@functools.cache
def _opacus_orders() -> tuple[float, ...]:
    from opacus.accountants import RDPAccountant  # noqa: PLC0415 (see the module note)

    return tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)


@functools.cache
def _planning_orders() -> tuple[float, ...]:
    """Opacus' orders at a coarser step below 11 (where the optimum lies for useful budgets).

    Several times cheaper, and never below the exact epsilon (a minimum over fewer
    orders), so a plan made with them is conservative.
    """
    return tuple(a for a in _opacus_orders() if a.is_integer() or (a < 11 and (a * 4).is_integer()))


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(sample_rate: float, noise: float, orders: tuple[float, ...]) -> NDArray[Any]:
    import numpy as np  # noqa: PLC0415
    from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: PLC0415

    return np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise, steps=1, orders=list(orders)
        ),
        dtype=np.float64,
    )


def _epsilon_rdp(history: Sequence[HistoryEntry], delta: float, orders: tuple[float, ...]) -> float:
    from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: PLC0415

    total = sum(int(s) * _rdp_per_step(float(q), float(z), orders) for z, q, s in history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha" at tiny epsilon
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(orders), rdp=total, delta=delta)
    return float(eps)


def unit_action(context_length: int = DEFAULT_CONTEXT_LENGTH) -> str:
    """The unit of ``epsilon_per_action``, with the number of examples an action sits in."""
    return f"one recorded action on one device (in up to {context_length + 1} examples)"


def adjacency_action(context_length: int = DEFAULT_CONTEXT_LENGTH) -> str:
    """The adjacency of ``epsilon_per_action``."""
    return f"add/remove up to {context_length + 1} examples (one action; Poisson sampling)"


def _group_exponent(group: int) -> int:
    """The c of the power of two 2^c that ``group`` is rounded up to."""
    return (group - 1).bit_length()


@functools.cache
def _group_orders(exponent: int) -> tuple[float, ...]:
    """Integer orders alpha >= 2^(c+1) (fast and exact in Opacus) for groups of 2^c."""
    size = 2**exponent
    orders = sorted({math.ceil(size * b) for b in _GROUP_BETAS if size * b <= _MAX_GROUP_ORDER})
    if not orders:
        raise ValueError(f"a group of {size} examples is beyond RDP group privacy here")
    return tuple(float(a) for a in orders)


def epsilon_per_action(
    history: Sequence[HistoryEntry],
    delta: float,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> float:
    """Epsilon for one recorded action: group privacy over the K+1 examples it sits in.

    An action is the target of one example and in the context of the next K, so
    datasets that differ by one action differ by up to K+1 examples. Mironov 2017
    ("Renyi Differential Privacy", Proposition 2): an (alpha, eps)-RDP mechanism
    with alpha >= 2^(c+1) is (alpha / 2^c, 3^c eps)-RDP for groups of 2^c. The
    device's RDP curve (Opacus' analysis over ``history``) is read at such alphas,
    K+1 rounded up to a power of two, and converted to (epsilon, delta) as Opacus does.
    The bound is loose, never below the per-example figure: it is what can be
    claimed, not an estimate of what leaks.
    """
    if context_length < 0:
        raise ValueError("context length must be at least 0")
    if context_length == 0:
        return epsilon_local(history, delta)  # a group of one: the example itself
    if not history:
        return 0.0
    if any(z <= 0 for z, _, _ in history):
        return math.inf
    from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: PLC0415

    exponent = _group_exponent(context_length + 1)
    orders = _group_orders(exponent)
    total = sum(int(s) * _rdp_per_step(float(q), float(z), orders) for z, q, s in history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the smallest alpha": beta >= 2 binds
        eps, _ = rdp_analysis.get_privacy_spent(
            orders=[a / 2**exponent for a in orders], rdp=3**exponent * total, delta=delta
        )
    return float(eps)


@dataclass(frozen=True)
class RoundShape:
    """What one round costs a device, fixed by the policy: DP-SGD steps and evaluations.

    Each round spends ``steps`` DP-SGD steps at ``sample_rate`` and ``evaluations``
    noised releases of held-out sums (``(evaluation_noise, 1.0, 1)`` each), the
    entries the device ledger records.
    """

    sample_rate: float
    steps: int
    evaluation_noise: float
    evaluations: int = 1

    def history(self, noise: float, rounds: int) -> list[HistoryEntry]:
        """``rounds`` rounds at local ``noise`` (RDP and PRV compose identical steps alike)."""
        spent: list[HistoryEntry] = [(noise, self.sample_rate, self.steps * rounds)]
        if self.evaluations * rounds > 0:
            spent.append((self.evaluation_noise, 1.0, self.evaluations * rounds))
        return spent


def noise_for_rounds(
    target: float,
    shape: RoundShape,
    rounds: int,
    delta: float,
    accountant: LocalAccountant = "rdp",
) -> float:
    """The smallest local noise whose ``rounds`` rounds of ``shape`` stay within ``target``."""
    return smallest_noise(
        lambda z: epsilon_local(shape.history(z, rounds), delta, accountant), target
    )


@functools.lru_cache(maxsize=64)
def per_action_at_cap(
    cap: float, delta: float, shape: RoundShape, rounds: int, context_length: int
) -> tuple[float, float]:
    """(local noise, per-action epsilon) of a device spending all of ``cap`` in ``rounds``.

    The noise is planned on coarser orders (never above the cap, and several times
    cheaper: a policy's description calls this). Raises ``PlanningError`` when the
    evaluations alone pass the cap.
    """
    noise = smallest_noise(
        lambda z: _epsilon_rdp(shape.history(z, rounds), delta, _planning_orders()), cap, tol=1e-2
    )
    return noise, epsilon_per_action(shape.history(noise, rounds), delta, context_length)


def _user_event(noise: float, sampling: float, rounds: int) -> dp_accounting.DpEvent:
    import dp_accounting  # noqa: PLC0415 (see the module note)

    gaussian = dp_accounting.GaussianDpEvent(noise)
    sampled = dp_accounting.PoissonSampledDpEvent(sampling, gaussian) if sampling < 1 else gaussian
    return dp_accounting.SelfComposedDpEvent(sampled, rounds)


def epsilon_user(
    noise: float,
    sampling: float,
    rounds: int,
    delta: float,
    accountant: UserAccountant = "rdp",
) -> float:
    """User-level epsilon of ``rounds`` Gaussian rounds on cohorts sampled at ``sampling``."""
    if rounds <= 0:
        return 0.0
    if noise <= 0:
        return math.inf
    import dp_accounting  # noqa: PLC0415 (see the module note)

    acc: dp_accounting.PrivacyAccountant = (
        dp_accounting.rdp.RdpAccountant(orders=_RDP_ORDERS)
        if accountant == "rdp"
        else dp_accounting.pld.PLDAccountant()
    )
    acc.compose(_user_event(noise, sampling, rounds))
    return float(acc.get_epsilon(delta))


def smallest_noise(
    epsilon_of: Callable[[float], float], target: float, high: float = 64.0, tol: float = 1e-3
) -> float:
    """The smallest noise multiplier whose epsilon is at most ``target`` (bisection)."""
    if target <= 0:
        raise PlanningError("target epsilon must be positive")
    if epsilon_of(high) > target:
        raise PlanningError(f"even noise {high} spends more than epsilon {target}")
    low = 0.0
    while high - low > tol:
        mid = (low + high) / 2
        if mid > 0 and epsilon_of(mid) <= target:
            high = mid
        else:
            low = mid
    return high


def noise_for_local(
    target: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: LocalAccountant = "rdp",
) -> float:
    """The smallest local noise multiplier meeting ``target`` for one plan."""
    return smallest_noise(
        lambda z: epsilon_local([(z, sample_rate, steps)], delta, accountant), target
    )


def noise_to_last(
    history: list[tuple[float, float, int]],
    sample_rate: float,
    steps: int,
    rounds_left: int,
    cap: float,
    delta: float,
    floor: float,
    ceiling: float = 20.0,
) -> float:
    """The least noise, at least ``floor``, that keeps a device under ``cap`` for every round left.

    A device that spends the same each remaining round (``steps`` at ``sample_rate``)
    after what ``history`` already spent ends the campaign at or below ``cap``.
    Raises ``PlanningError`` when even ``ceiling`` cannot (the budget is spent, or
    what is left would only buy updates that are pure noise).
    """
    rounds_left = max(1, rounds_left)

    def epsilon_of(z: float) -> float:
        if z <= 0:
            return math.inf
        planned = [*history, (z, sample_rate, steps * rounds_left)]  # RDP adds up over steps
        return _epsilon_rdp(planned, delta, _planning_orders())

    if epsilon_of(max(floor, 1e-3)) <= cap:
        return floor
    return smallest_noise(epsilon_of, cap, high=max(ceiling, floor))


def noise_for_user(
    target: float,
    sampling: float,
    rounds: int,
    delta: float,
    accountant: UserAccountant = "rdp",
) -> float:
    """The smallest central noise multiplier meeting ``target`` over a campaign."""
    return smallest_noise(lambda z: epsilon_user(z, sampling, rounds, delta, accountant), target)
