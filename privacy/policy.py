"""The privacy policy: a TOML file the privacy team writes, validated once here.

Every problem is one line that names the key. The policy's hash (SHA-256 of a
canonical JSON of the validated values) travels with every round, so a device
can refuse a round run under a policy other than the one it agreed to.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from policy.events import AppCategory, Modality
from policy.round_contract import DEFAULT_CONTEXT_LENGTH
from privacy.accountants import (
    ADJACENCY_EXAMPLE,
    ADJACENCY_USER,
    UNIT_LOCAL,
    PlanningError,
    RoundShape,
    adjacency_action,
    per_action_at_cap,
    unit_action,
)
from privacy.renyi_filter import DEFAULT_ORDERS, filter_for, lifetime_rounds

ENV_POLICY: Final = "HEARTH_POLICY"


class PolicyError(ValueError):
    """The policy file is malformed or invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrivacySection(_Section):
    """The (epsilon, delta) budgets, and the largest dataset delta must stay small against."""

    delta: float = Field(gt=0, lt=1)
    device_epsilon_cap: float = Field(gt=0)
    user_epsilon_target: float = Field(gt=0)
    # A device trains on at most this many (most recent) examples, so delta stays far
    # below 1 / n: a mechanism that publishes one random example is (0, 1/n)-DP.
    max_examples_per_device: int = Field(default=8000, ge=1)
    # User-level DP (unit: one user): its delta (default: ``delta``) and the window its
    # target covers; every campaign's noised rounds within the window count.
    user_delta: float | None = Field(default=None, gt=0, lt=1)
    user_horizon_days: float = Field(default=365.0, gt=0)

    # The fixed Rényi orders of the device's filter (privacy.renyi_filter): chosen here,
    # before any round, never optimised afterwards (invalid under adaptive stopping).
    renyi_orders: tuple[float, ...] = Field(default=DEFAULT_ORDERS, min_length=1, max_length=64)

    @property
    def delta_user(self) -> float:
        """The delta of the user-level guarantee."""
        return self.user_delta if self.user_delta is not None else self.delta

    @field_validator("renyi_orders")
    @classmethod
    def _orders_above_one(cls, orders: tuple[float, ...]) -> tuple[float, ...]:
        if any(not math.isfinite(a) or a <= 1 for a in orders):
            raise ValueError("every Rényi order must be a number above 1")
        return tuple(sorted(set(orders)))

    @model_validator(mode="after")
    def _some_order_has_room(self) -> PrivacySection:
        renyi = filter_for(self.renyi_orders, self.device_epsilon_cap, self.delta)
        if not renyi.has_room():
            raise ValueError(
                f"no Rényi order in renyi_orders leaves room under device_epsilon_cap "
                f"{self.device_epsilon_cap:g} at delta {self.delta:g}; add larger orders"
            )
        return self

    @model_validator(mode="after")
    def _delta_small_against_the_data(self) -> PrivacySection:
        bound = 1.0 / (10 * self.max_examples_per_device)
        if self.delta >= bound:
            raise ValueError(
                f"delta {self.delta:g} must be below 1/(10 x max_examples_per_device) = "
                f"{bound:.3g}; lower delta or max_examples_per_device"
            )
        return self


class TrainingSection(_Section):
    """Clipping, noise, the shape of a local round and the cohort rule.

    The shape of a round (sample rate, steps, the batch the noise is divided by) is
    the policy's, not the server's and never the device's data size: anything derived
    from how many examples a laptop holds would leak that number with every update.
    """

    max_grad_norm: float = Field(gt=0)
    local_noise_multiplier: float = Field(ge=0)
    # Poisson sampling: each example joins each DP-SGD step with this probability.
    sample_rate: float = Field(default=0.25, gt=0, le=1)
    # DP-SGD steps in one local round.
    steps: int = Field(default=8, ge=1)
    # The fixed denominator of each noised gradient sum (the batch the noise is planned for).
    batch_size: int = Field(default=512, ge=1)
    # Gaussian noise on a device's released evaluation sums, per unit of sensitivity.
    evaluation_noise_multiplier: float = Field(default=8.0, gt=0)
    # When true, local_noise_multiplier is the least noise: each device adds more when
    # needed so its cap lasts the whole campaign (older policies: a fixed noise).
    spread_local_budget: bool = False
    # How many rounds a day the device expects to join: with spread_local_budget, noise is
    # planned so a day of data can join this many rounds a day over its whole lifetime.
    rounds_per_day: float = Field(default=1.0, gt=0, le=96)
    update_clip_norm: float = Field(gt=0)
    central_noise_multiplier: float = Field(ge=0)
    min_cohort: int = Field(ge=1)
    # Distributed DP: each device adds its share of the central noise (std
    # z x clip / sqrt(min_cohort)) before SecAgg+ masks its update, so any min_cohort
    # shares sum to the full noise and no party holds a sum without it. Devices refuse
    # to unmask fewer. False: the server adds the noise (older policies).
    distributed_noise: StrictBool = False


# Sites (domains or names) whose window title suppresses capture in any app, e.g. a
# browser tab; also the default for policies written before sites existed.
_SITES: tuple[str, ...] = (
    "workday", "myworkday.com", "bamboohr", "personio", "successfactors", "payroll",
    "bank", "banking", "paypal", "revolut", "n26",
    "whatsapp", "web.whatsapp.com", "telegram", "signal", "messenger",
    "bitwarden", "1password", "lastpass", "keeper", "dashlane", "keepass",
    "sign in", "sign-in", "log in", "login", "anmelden", "connexion",
)  # fmt: skip
DEFAULT_SENSITIVE_SITES: tuple[str, ...] = tuple(sorted(_SITES))  # as the validator keeps them


class DataSection(_Section):
    """What may be captured and for how long."""

    allowed_modalities: tuple[Modality, ...]
    retention_days: float = Field(gt=0, le=365)
    vault_quota_mb: int = Field(gt=0)
    sensitive_apps: tuple[str, ...]
    sensitive_categories: tuple[AppCategory, ...]
    sensitive_sites: tuple[str, ...] = DEFAULT_SENSITIVE_SITES

    @field_validator("sensitive_apps", "sensitive_sites")
    @classmethod
    def _lowercase(cls, apps: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({a.strip().lower() for a in apps if a.strip()}))


class GovernorSection(_Section):
    """When training may run on a laptop."""

    idle_seconds: float = Field(ge=0)
    max_cpu_percent: float = Field(gt=0, le=100)
    require_mains_power: bool
    # Whether the network is metered is asked of the OS (NetworkManager on Linux). A
    # metered network always declines; "unknown" declines too unless this is true.
    allow_unknown_metering: StrictBool = False


class AggregationSection(_Section):
    """What a device requires of the secure aggregation its update goes into.

    Checked by each device on the SecAgg+ messages themselves (``client.learning.secagg_guard``):
    a round without SecAgg+ when it is required, a setup with fewer shares or a lower
    reconstruction threshold, and an unmask step naming fewer active devices than the
    cohort rule are refused.
    """

    require_secure_aggregation: StrictBool = False
    # Each update is secret-shared among at least this many devices (itself included).
    min_num_shares: int = Field(default=3, ge=3)
    # Unmasking needs at least this fraction of the shares (rounded up, at least 2).
    min_reconstruction_fraction: float = Field(default=0.5, gt=0, le=1)

    def min_threshold(self, num_shares: int) -> int:
        """The least reconstruction threshold acceptable for ``num_shares`` shares."""
        # The small tolerance keeps 0.6 x 5 at 3 despite binary floating point.
        return max(2, math.ceil(self.min_reconstruction_fraction * num_shares - 1e-9))


class PrivacyPolicy(_Section):
    """The whole policy."""

    privacy: PrivacySection
    training: TrainingSection
    data: DataSection
    governor: GovernorSection
    # Policies written before this section existed do not require SecAgg+.
    aggregation: AggregationSection = AggregationSection()


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    message = first["msg"]
    if first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        key = key or "policy"
    elif first["type"] == "extra_forbidden":
        message = "is not a known setting"
    elif first["type"] == "missing":
        message = "is required"
    elif "input" in first and first["type"] != "missing":
        message = f"{message}, got {first['input']!r}"
    return f"privacy policy error: '{key}' {message} (in {source})"


def parse_policy(text: str, source: str = "policy") -> PrivacyPolicy:
    """Parse and validate policy TOML; raise ``PolicyError`` with one clear line.

    The same text is parsed once per process (the model is frozen): a simulated
    device's round reads its policy five times (admission, vault, egress guard,
    noise share, SecAgg+), 4% of a simulation worker's time at 1,000 devices a round.
    A changed file is new text and is parsed again; errors are never cached.
    """
    return _parse_policy(text, source)


@functools.lru_cache(maxsize=64)
def _parse_policy(text: str, source: str) -> PrivacyPolicy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"privacy policy error: not valid TOML: {exc} (in {source})") from None
    try:
        return PrivacyPolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_one_line(exc, source)) from None


def default_policy_text() -> str:
    """The policy hearth ships with (simulations; SecAgg+ not required)."""
    return resources.files("privacy").joinpath("default_policy.toml").read_text()


def demo_policy_text() -> str:
    """The policy of ``make demo``: 20 employees, no user-level guarantee (it says so)."""
    return resources.files("privacy").joinpath("demo_policy.toml").read_text()


def deployment_policy_text() -> str:
    """The policy hearth ships for real deployments: SecAgg+ required, a larger cohort."""
    return resources.files("privacy").joinpath("deployment_policy.toml").read_text()


def load_policy(path: Path | None = None) -> PrivacyPolicy:
    """Load ``path``, else ``HEARTH_POLICY``, else the shipped default."""
    chosen = path or (Path(os.environ[ENV_POLICY]) if os.environ.get(ENV_POLICY) else None)
    if chosen is None:
        return parse_policy(default_policy_text(), "the default policy")
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise PolicyError(f"privacy policy error: cannot read {chosen}: {exc.strerror}") from None
    return parse_policy(text, str(chosen))


def policy_hash(policy: PrivacyPolicy) -> str:
    """SHA-256 of the canonical JSON of the validated policy (order-independent)."""
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _local_noise(t: TrainingSection, d: DataSection) -> str:
    if t.spread_local_budget:
        rounds = lifetime_rounds(t.rounds_per_day, d.retention_days)
        return (
            f"of at least x{t.local_noise_multiplier:g}, more where needed so a day of data "
            f"can join {rounds} rounds over its lifetime ({t.rounds_per_day:g} a day, whatever "
            "the campaign)"
        )
    return f"x{t.local_noise_multiplier:g}"


def _lifetime(p: PrivacySection, t: TrainingSection, d: DataSection) -> str:
    """The example-level promise in words: per example, over the days it is kept."""
    return (
        f"Per example, over the {d.retention_days:g} days it is kept: each laptop protects "
        f"every example at epsilon {p.device_epsilon_cap:g} (unit: {UNIT_LOCAL}, over the "
        f"{d.retention_days:g} days it is kept; {ADJACENCY_EXAMPLE}; delta {p.delta:g}). "
        f"Its ledger charges every round and evaluation to each day of data the round could "
        f"read and refuses a round that would take any day past the cap (a Rényi filter at "
        f"the fixed orders {', '.join(f'{a:g}' for a in p.renyi_orders)}); a day's spent "
        f"budget goes with the day, so a laptop keeps contributing for as long as it takes "
        f"part, in every campaign. DP-SGD clips each example's gradient to "
        f"{t.max_grad_norm:g} and adds noise {_local_noise(t, d)}."
    )


def _per_action(p: PrivacySection, t: TrainingSection, rounds: int) -> str:
    """The per-action figure of a day of data that joins its lifetime's rounds at the cap."""
    k = DEFAULT_CONTEXT_LENGTH
    head = (
        f"One recorded action sits in up to {k + 1} examples (the target of one, in the "
        f"context of the next {k}), so it is protected less: "
    )
    shape = RoundShape(t.sample_rate, t.steps, t.evaluation_noise_multiplier)
    try:
        noise, eps = per_action_at_cap(p.device_epsilon_cap, p.delta, shape, rounds, k)
    except PlanningError:
        return head + "the evaluations alone would pass the cap, so no laptop could train."
    return head + (
        f"a day of data that joins {rounds} rounds at the cap (noise x{noise:.2f}, "
        f"one evaluation each) has epsilon {eps:,.0f} per action (unit: {unit_action(k)}; "
        f"{adjacency_action(k)}; RDP group privacy, a loose bound; delta {p.delta:g})."
    )


def _user_level(p: PrivacySection, t: TrainingSection) -> str:
    if t.central_noise_multiplier <= 0:
        return (
            f"Each update is clipped to norm {t.update_clip_norm:g}; the server adds no "
            "central noise: no user-level guarantee (for one user across the campaign)."
        )
    unit = f"one user, every campaign within {p.user_horizon_days:g} days"
    target = (
        f"the campaigns stop before user-level epsilon {p.user_epsilon_target:g} (unit: "
        f"{unit}; {ADJACENCY_USER}; delta {p.delta_user:g})"
    )
    if t.distributed_noise:
        return (
            f"Each update is clipped to norm {t.update_clip_norm:g}, and each laptop adds "
            f"its share of the Gaussian noise (x{t.central_noise_multiplier:g} on the sum of "
            f"any {t.min_cohort} updates) before secure aggregation masks it; laptops refuse "
            f"to unmask fewer; {target}. Facing the server that figure holds without "
            "sampling amplification, and only when updates are summed under SecAgg+."
        )
    return (
        f"Each update is clipped to norm {t.update_clip_norm:g}; the server adds Gaussian "
        f"noise (x{t.central_noise_multiplier:g}) to the sum and {target}. That noise "
        "protects against readers of the model and checkpoints, not against the server, "
        "which adds it."
    )


def describe(policy: PrivacyPolicy) -> str:
    """The policy in plain words, each figure with its unit, for employees and auditors."""
    p, t, d, g = policy.privacy, policy.training, policy.data, policy.governor
    lines: list[str] = [
        f"Recording may cover: {', '.join(m.value for m in d.allowed_modalities)}.",
        f"Raw events are deleted after {d.retention_days:g} days, or sooner beyond "
        f"{d.vault_quota_mb} MB.",
        f"Nothing but a gap is kept while these are in front: {', '.join(d.sensitive_apps)} "
        f"(and any {', '.join(c.value for c in d.sensitive_categories)} app), and while a "
        f"window's title names one of these sites: {', '.join(d.sensitive_sites)} (the "
        "title is matched when it is read and never stored).",
        _lifetime(p, t, d),
        f"This policy, not the laptop's data, fixes the shape of a round: each example "
        f"joins each of {t.steps} DP-SGD steps with probability {t.sample_rate:g}, and each "
        f"noised gradient sum is divided by {t.batch_size}; a laptop trains on at most its "
        f"{p.max_examples_per_device} most recent examples.",
        f"Held-out accuracy and loss leave a laptop only as Gaussian-noised sums (noise "
        f"x{t.evaluation_noise_multiplier:g} per unit of sensitivity), each release charged "
        "to its ledger like a training round.",
        _per_action(p, t, lifetime_rounds(t.rounds_per_day, d.retention_days)),
        _user_level(p, t),
        "Facing the server itself, the example-level guarantee is the one that holds.",
        f"The server combines a round only with at least {t.min_cohort} laptops.",
        _aggregation(policy.aggregation),
        f"Training runs only after {g.idle_seconds:g} s idle, below {g.max_cpu_percent:g}% CPU"
        + (", on mains power" if g.require_mains_power else "")
        + ", never on a metered network"
        + (
            " (a network whose metering is unknown counts as unmetered)."
            if g.allow_unknown_metering
            else " (nor on one whose metering is unknown)."
        ),
        f"Policy hash: {policy_hash(policy)}",
    ]
    return "\n".join(lines)


def _aggregation(a: AggregationSection) -> str:
    shares = (
        f"each update is secret-shared among at least {a.min_num_shares} laptops, and "
        f"unmasking needs at least {a.min_reconstruction_fraction:g} of the shares "
        f"({a.min_threshold(a.min_num_shares)} of {a.min_num_shares})"
    )
    if a.require_secure_aggregation:
        return (
            f"Laptops send updates only under SecAgg+, so the server sees only their sum: "
            f"{shares}. This holds against a curious server, not one that deviates from "
            "the protocol beyond what the laptops check."
        )
    return (
        "SecAgg+ is not required: without it the server sees each laptop's clipped, noised "
        f"update. When it runs, {shares}."
    )


def policy_changes(
    before: PrivacyPolicy | Mapping[str, Any] | None, after: PrivacyPolicy | Mapping[str, Any]
) -> list[PolicyChange]:
    """Every setting (``section.key``) whose value differs between two policies.

    Either side may be a policy or its JSON form (``policy_as_dict``, as a consent
    record keeps it); ``before`` is None when there was none: every setting is listed.
    """
    old = _flatten(before) if before is not None else {}
    new = _flatten(after)
    return [
        PolicyChange(key, old.get(key), new.get(key))
        for key in [*new, *(k for k in old if k not in new)]
        if old.get(key) != new.get(key)
    ]


def _flatten(data: PrivacyPolicy | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    if isinstance(data, PrivacyPolicy):
        data = data.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class PolicyChange:
    """One setting (``section.key``) and its value before and after (None: not set)."""

    setting: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.setting}: {_value(self.before)} -> {_value(self.after)}"


def _value(value: Any) -> str:
    if value is None:
        return "(not set)"
    return json.dumps(value)


def policy_as_dict(policy: PrivacyPolicy) -> dict[str, Any]:
    """JSON-ready form (for sidecars and the dashboard)."""
    return policy.model_dump(mode="json")
