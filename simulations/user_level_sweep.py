"""Utility against user-level privacy: the default campaign at several user-level budgets.

For each target user-level epsilon the accountant (``privacy.user_level``) chooses the
least central noise multiplier ``z`` that keeps the policy's horizon within it: the
rounds at the shipped sampling rate ``q`` that the shipped policy's ``z`` buys in its
horizon (30 a year at ``q = 0.1``), so a campaign's share of the year is what ships. At
the policy's own target the ``z`` is the policy's, so that point is the shipped campaign
itself. The device's local DP is unchanged (the shipped policy's, with the noise each
device plans for its lifetime), and so is the model (the run config's hidden width).
``none`` is the same campaign without any noise, clipping or local DP, at its own
learning rate tuned on validation data carved from the devices' training parts. Every
point is scored exactly on every device's held-out part.

A round of 1,000 devices through ``flwr run`` takes minutes, so the campaigns run in
process (``simulations.inprocess.run_user_level``: the same local round, update clip,
noise shares, Poisson sampling and ``DeltaFedAvg.step``). On fewer devices than the
shipped 10,000, ``q``, the rounds and the horizon stay the shipped ones (so the
accountant's figures are the shipped ones), ``min_cohort`` scales with the expected
cohort, and the noise std on the averaged update, ``z x clip / (q x N)``, is larger
than at 10,000 by 10,000 / N: the accuracy is then a pessimistic reading, which
``hearth-privacy plan user --utility-sweep`` converts through that std.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import matplotlib
import numpy as np

from client.learning.app import HELD_OUT_FRACTION, train_config
from client.learning.device import SIM_PASSPHRASE_FILE, Device, simulated_device_home
from client.learning.featurize import Examples, split_held_out
from client.learning.threads import training_threads
from policy.model import ModelConfig, NextActionPolicy
from privacy.accountants import UserAccountant
from privacy.ledger import BudgetRule, planned_noise, planned_round
from privacy.policy import PrivacyPolicy, default_policy_text, parse_policy
from privacy.user_level import NoisedRound, epsilon_readers, noise_for_target, rounds_within
from simulations.campaign import default_campaign
from simulations.inprocess import (
    LEARNING_RATE_GRID,
    LearningRateSearch,
    ServerSearch,
    UserLevelCampaign,
    UserLevelOutcome,
    mean_accuracy,
    run_user_level,
    tune_server,
    tune_user_level,
)

# The shipped policy's company (privacy/default_policy.toml): 10,000 laptops, 1,000 a round.
SHIPPED_POPULATION: Final = 10_000
SHIPPED_PER_ROUND: Final = 1_000
DEFAULT_TARGETS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
# The bar: at most this relative loss of top-1 at user-level epsilon <= 1.
LOSS_TARGET: Final = 0.05
# An update clip no honest non-private update reaches (the policy requires one > 0).
NO_UPDATE_CLIP: Final = 1e6
SWEEP_JSON: Final = "user_sweep.json"


@dataclass(frozen=True)
class UserSweepSetup:
    """What every point of the sweep shares, as it ran."""

    population: int
    sampling: float
    campaign_rounds: int
    horizon_rounds: int
    horizon_days: float
    delta: float
    min_cohort: int
    update_clip: float
    device_epsilon_cap: float
    device_delta: float
    local_noise: float
    learning_rate: float
    # The device's side of the lever (``device_spend``): what one round of local DP-SGD
    # at ``local_noise`` (and its noised evaluation) costs an example, and how many
    # rounds a day of data can join before ``device_epsilon_cap`` stops it.
    device_epsilon_round: float = math.nan
    device_rounds_within_cap: int = 0
    # The data side: median training examples per device and the expected DP-SGD batch
    # (``sample_rate`` x that), against the fixed divisor ``batch_size``.
    examples_per_device: float = math.nan
    expected_batch: float = math.nan
    # True: each target's z x N / 10,000, so the noise on the mean is the shipped
    # 10,000-device population's at that target (the epsilons are that population's).
    shipped_scale: bool = False
    # The accountant that chose z (and reports the epsilons), the model's size, and the
    # server optimizers the noised campaigns chose from on validation data.
    accountant: UserAccountant = "rdp"
    hidden: int = ModelConfig.hidden
    token_dim: int = ModelConfig.token_dim
    model_parameters: int = 0
    server_learning_rates: tuple[float, ...] = ()
    server_momenta: tuple[float, ...] = ()


@dataclass(frozen=True)
class UserSweepPoint:
    """One target's outcome (``target_epsilon`` inf: the campaign without noise)."""

    target_epsilon: float
    noise_multiplier: float
    noise_std_on_mean: float
    epsilon_campaign: float  # facing readers, after this campaign's rounds
    epsilon_horizon: float  # facing readers, the horizon's rounds at this z
    top1: float
    top3: float
    relative_loss: float  # of top-1 against the non-private point
    learning_rate: float
    mean_cohort: float
    rounds_aggregated: int
    # Contributors' update norms before the update clip, over every round: a clip far
    # above them only scales the central noise up; one below clips every update.
    update_norm_median: float = math.nan
    update_norm_p90: float = math.nan
    # The devices' local DP-SGD noise in this campaign (0: none). A point with no
    # central noise but local noise is "device DP only"; the baseline has neither.
    local_noise: float = 0.0
    # The server optimizer this campaign ran (chosen on validation when a grid was given).
    server_learning_rate: float = 1.0
    server_momentum: float = 0.7
    # Sampled device-rounds the devices' ledgers refused (past their rounds within the cap).
    rounds_declined: int = 0


def is_baseline(point: UserSweepPoint) -> bool:
    """The campaign without any noise that every point's loss is measured against."""
    return point.noise_multiplier == 0 and point.local_noise == 0


def shipped_policy() -> PrivacyPolicy:
    """The shipped default policy."""
    return parse_policy(default_policy_text(), "default policy")


def horizon_rounds(policy: PrivacyPolicy, sampling: float) -> int:
    """The rounds at ``sampling`` the policy's own ``z`` buys within its horizon."""
    p = policy.privacy
    return rounds_within(
        p.user_epsilon_target, policy.training.central_noise_multiplier, sampling, p.delta_user
    )


def _set(text: str, key: str, value: str) -> str:
    return re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)


def policy_at(noise: float, min_cohort: int, update_clip: float | None = None) -> PrivacyPolicy:
    """The shipped policy with central noise ``noise`` (0: no noise, no clipping, no DP).

    ``update_clip`` replaces the shipped ``update_clip_norm`` of the noised campaigns
    (the central noise is proportional to it).
    """
    text = _set(default_policy_text(), "min_cohort", str(min_cohort))
    if noise > 0:
        text = _set(text, "central_noise_multiplier", f"{noise!r}")
        if update_clip is not None:
            text = _set(text, "update_clip_norm", f"{update_clip!r}")
    else:
        text = _set(text, "central_noise_multiplier", "0.0")
        text = _set(text, "local_noise_multiplier", "0.0")
        text = _set(text, "update_clip_norm", f"{NO_UPDATE_CLIP:g}")
    return parse_policy(text, "user-level sweep policy")


@dataclass(frozen=True)
class DeviceSpend:
    """What local DP-SGD at one noise multiplier costs each example, per the device's ledger."""

    noise: float
    epsilon_one_round: float  # one round's steps and its evaluation, at delta
    rounds_within_cap: int  # whole rounds a day of data can join under the cap
    lifetime_rounds: int  # the rounds a day joins at the policy's rounds_per_day


def device_spend(policy: PrivacyPolicy, noise: float, most: int = 10_000) -> DeviceSpend:
    """The ledger's charge for a round at ``noise`` (``planned_noise``'s round and filter).

    A round is ``steps`` Poisson-sampled DP-SGD steps at ``sample_rate`` plus one
    evaluation release, charged to every day of data it could read; a day stops at
    the first round its filter would not admit.
    """
    from privacy.renyi_filter import lifetime_rounds, rounds_rdp  # noqa: PLC0415

    t = policy.training
    rule = BudgetRule.from_policy(policy)
    orders = rule.renyi.orders
    round_charges, evaluation = planned_round(policy)

    def spent(rounds: int) -> Any:
        return rounds_rdp(orders, noise, round_charges, evaluation, rounds)

    zero = np.zeros(len(orders))
    rounds = 0
    while rounds < most and rule.renyi.admits(zero, spent(rounds + 1)):
        rounds += 1
    return DeviceSpend(
        noise,
        rule.renyi.epsilon(spent(1)),
        rounds,
        lifetime_rounds(t.rounds_per_day, rule.retention_days),
    )


def noise_for(
    target: float, sampling: float, rounds: int, delta: float, accountant: UserAccountant = "rdp"
) -> float:
    """The accountant's least ``z`` for ``target`` over ``rounds`` at ``sampling`` (0: none)."""
    if math.isinf(target):
        return 0.0
    return noise_for_target(target, sampling, rounds, delta, accountant)


def parameter_count(model_config: ModelConfig) -> int:
    """The numbers in one update: the central noise is drawn on every one of them."""
    return sum(p.numel() for p in NextActionPolicy(model_config).parameters())


def load_devices(
    root: Path, population: int, context_length: int
) -> tuple[list[Examples], list[Examples]]:
    """Each device's training and held-out parts, read from its encrypted vault once."""
    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    most = shipped_policy().privacy.max_examples_per_device
    train, held = [], []
    for employee in range(population):
        device = Device(simulated_device_home(root, employee), passphrase, simulated=True)
        part, kept = split_held_out(device.examples(context_length), HELD_OUT_FRACTION)
        train.append(part.slice(max(0, len(part) - most)))
        held.append(kept.slice(max(0, len(kept) - most)))
    return train, held


@training_threads()  # each device trains on one thread, as on a laptop
def run_user_sweep(
    train: Sequence[Examples],
    held: Sequence[Examples],
    targets: Sequence[float] = DEFAULT_TARGETS,
    rounds: int | None = None,
    grid: Sequence[float] = LEARNING_RATE_GRID,
    on_point: Callable[[UserSweepPoint], None] | None = None,
    on_search: Callable[[LearningRateSearch], None] | None = None,
    update_clip: float | None = None,
    local_noise: float | None = None,
    shipped_scale: bool = False,
    local_only: bool = False,
    budget_rounds: int | None = None,
    accountant: UserAccountant = "rdp",
    model_config: ModelConfig | None = None,
    server_rates: Sequence[float] = (),
    server_momenta: Sequence[float] = (),
    on_server_search: Callable[[ServerSearch], None] | None = None,
) -> tuple[UserSweepSetup, list[UserSweepPoint]]:
    """Every target's campaign on the same devices, the non-private one first.

    ``update_clip`` replaces the shipped update clip in the noised campaigns;
    ``local_noise`` the devices' DP-SGD noise multiplier (default: the noise the shipped
    policy plans for a day's lifetime), its cost reported as the ledger charges it.
    ``shipped_scale`` runs each target at z x N / 10,000, the shipped population's
    noise on the mean; ``local_only`` adds a campaign with device DP and no central noise.

    ``rounds`` may use more of the year than the default campaign's 10; ``budget_rounds``
    is the noised rounds a year the budget is spread over (default: the 30 the shipped
    ``z`` buys), ``accountant`` the one choosing each target's ``z``; with neither given,
    the policy's own target runs at the policy's ``z`` (the shipped campaign exactly).
    ``server_rates`` x ``server_momenta`` is searched on validation data for every
    campaign (the baseline's after its learning rate); empty: the default campaign's. A
    device whose ledger admits no more rounds for its data declines (``device_spend``'s
    rounds within the cap), as on a laptop.
    """
    shipped = shipped_policy()
    campaign = default_campaign()
    population = len(train)
    sampling = SHIPPED_PER_ROUND / SHIPPED_POPULATION
    delta = shipped.privacy.delta_user
    horizon = horizon_rounds(shipped, sampling) if budget_rounds is None else budget_rounds
    trained = campaign.num_server_rounds if rounds is None else rounds
    # The shipped min_cohort against its expected cohort, at this population's.
    min_cohort = max(
        1, math.floor(shipped.training.min_cohort * sampling * population / SHIPPED_PER_ROUND)
    )
    model_config = model_config or campaign.model_config()
    rates = tuple(server_rates) or (campaign.server_learning_rate,)
    momenta = tuple(server_momenta) or (campaign.server_momentum,)
    dp_policy = policy_at(1.0, min_cohort, update_clip)
    dp_train = _device_round(dp_policy, campaign.learning_rate, local_noise)
    spend = device_spend(dp_policy, dp_train.noise_multiplier)
    examples = float(np.median([len(t) for t in train])) if train else 0.0
    setup = UserSweepSetup(
        population=population,
        sampling=sampling,
        campaign_rounds=trained,
        horizon_rounds=horizon,
        horizon_days=shipped.privacy.user_horizon_days,
        delta=delta,
        min_cohort=min_cohort,
        update_clip=dp_policy.training.update_clip_norm,
        device_epsilon_cap=shipped.privacy.device_epsilon_cap,
        device_delta=shipped.privacy.delta,
        local_noise=dp_train.noise_multiplier if dp_train.private else 0.0,
        learning_rate=campaign.learning_rate,
        device_epsilon_round=spend.epsilon_one_round,
        device_rounds_within_cap=spend.rounds_within_cap,
        examples_per_device=examples,
        expected_batch=dp_train.sample_rate * examples,
        shipped_scale=shipped_scale,
        accountant=accountant,
        hidden=model_config.hidden,
        token_dim=model_config.token_dim,
        model_parameters=parameter_count(model_config),
        server_learning_rates=rates,
        server_momenta=momenta,
    )
    # The noise on the mean z x clip / (q x N) is the shipped population's at z x scale.
    scale = population / SHIPPED_POPULATION if shipped_scale else 1.0

    def shape(policy: PrivacyPolicy, config: Any, private: bool) -> UserLevelCampaign:
        return UserLevelCampaign(
            rounds=trained,
            train=config,
            policy=policy,
            sampling=sampling,
            server_learning_rate=campaign.server_learning_rate,
            server_momentum=campaign.server_momentum,
            seed=campaign.seed,
            device_rounds=spend.rounds_within_cap if private else None,
        )

    # (target, local only): the baseline first, then device DP alone, then each target.
    ordered = [(t, False) for t in sorted(targets, key=lambda t: (not math.isinf(t), t))]
    if local_only:
        ordered.insert(sum(math.isinf(t) for t, _ in ordered), (math.inf, True))
    # The shipped budget and accountant: the policy's own target runs the policy's own z.
    as_shipped = budget_rounds is None and accountant == "rdp"
    baseline: float | None = None
    points = []
    for target, device_only in ordered:
        accounted = (
            shipped.training.central_noise_multiplier
            if as_shipped and target == shipped.privacy.user_epsilon_target
            else noise_for(target, sampling, horizon, delta, accountant)
        )
        z = accounted * scale
        if device_only:
            policy = local_only_policy(dp_policy)
            config = dp_train
        elif z > 0:
            policy, config = policy_at(z, min_cohort, update_clip), dp_train
        else:
            policy = policy_at(0.0, min_cohort)
            config = train_config(policy, campaign.learning_rate)
            shaped = shape(policy, config, False)
            rate = _baseline_rate(train, shaped, model_config, grid, on_search)
            config = replace(config, learning_rate=rate)
        shaped = shape(policy, config, device_only or z > 0)
        chosen = _tuned(train, shaped, model_config, (rates, momenta), on_server_search)
        outcome = run_user_level(train, chosen, model_config)
        point = _point(setup, target, accounted * scale, accounted, chosen, outcome, held)
        if baseline:
            point = replace(point, relative_loss=1 - point.top1 / baseline)
        if is_baseline(point):
            baseline = point.top1
            point = replace(point, relative_loss=0.0)
        points.append(point)
        if on_point is not None:
            on_point(point)
    return setup, points


def _baseline_rate(
    train: Sequence[Examples],
    shaped: UserLevelCampaign,
    model_config: ModelConfig,
    grid: Sequence[float],
    on_search: Callable[[LearningRateSearch], None] | None,
) -> float:
    """The no-noise campaign's learning rate: the best on validation (one given: that one)."""
    if len(grid) == 1:
        return grid[0]
    search = tune_user_level(train, shaped, model_config, grid)
    if on_search is not None:
        on_search(search)
    return search.best


def _device_round(policy: PrivacyPolicy, learning_rate: float, local_noise: float | None) -> Any:
    """The devices' local round: at ``local_noise``, else the noise the policy plans."""
    config = train_config(policy, learning_rate)
    local = (
        planned_noise(policy, BudgetRule.from_policy(policy))
        if local_noise is None
        else local_noise
    )
    return replace(config, noise_multiplier=local) if config.private else config


def _tuned(
    train: Sequence[Examples],
    shaped: UserLevelCampaign,
    model_config: ModelConfig,
    grid: tuple[tuple[float, ...], tuple[float, ...]],
    on_search: Callable[[ServerSearch], None] | None,
) -> UserLevelCampaign:
    """``shaped`` at the server optimizer chosen on validation (the only one: no search)."""
    rates, momenta = grid
    if len(rates) * len(momenta) == 1:
        return replace(shaped, server_learning_rate=rates[0], server_momentum=momenta[0])
    search = tune_server(train, shaped, model_config, rates, momenta)
    if on_search is not None:
        on_search(search)
    rate, momentum = search.best
    return replace(shaped, server_learning_rate=rate, server_momentum=momentum)


def _point(
    setup: UserSweepSetup,
    target: float,
    z: float,
    accounted: float,
    chosen: UserLevelCampaign,
    outcome: UserLevelOutcome,
    held: Sequence[Examples],
) -> UserSweepPoint:
    """One campaign's outcome scored on every held-out part (relative loss not yet known)."""
    top1, top3 = (float(score) for score in mean_accuracy(outcome.model, held))
    noised = [NoisedRound(accounted, setup.sampling)]
    norms = [n for round_norms in outcome.update_norms for n in round_norms]
    accountant: UserAccountant = "pld" if setup.accountant == "pld" else "rdp"

    def epsilon(rounds: int) -> float:
        return epsilon_readers(noised * rounds, setup.delta, accountant) if z > 0 else math.inf

    clip = chosen.policy.training.update_clip_norm
    return UserSweepPoint(
        target_epsilon=target,
        noise_multiplier=z,
        noise_std_on_mean=z * clip / (setup.sampling * setup.population) if z > 0 else 0.0,
        epsilon_campaign=epsilon(setup.campaign_rounds),
        epsilon_horizon=epsilon(setup.horizon_rounds),
        top1=top1,
        top3=top3,
        relative_loss=math.nan,
        learning_rate=chosen.train.learning_rate,
        mean_cohort=sum(outcome.cohorts) / max(1, len(outcome.cohorts)),
        rounds_aggregated=sum(outcome.aggregated),
        update_norm_median=float(np.median(norms)) if norms else math.nan,
        update_norm_p90=float(np.percentile(norms, 90)) if norms else math.nan,
        local_noise=chosen.train.noise_multiplier if chosen.train.private else 0.0,
        server_learning_rate=chosen.server_learning_rate,
        server_momentum=chosen.server_momentum,
        rounds_declined=outcome.declined,
    )


def local_only_policy(dp_policy: PrivacyPolicy) -> PrivacyPolicy:
    """``dp_policy`` without central noise: each device's DP-SGD and update clip only."""
    text = _set(default_policy_text(), "min_cohort", str(dp_policy.training.min_cohort))
    text = _set(text, "central_noise_multiplier", "0.0")
    text = _set(text, "update_clip_norm", f"{dp_policy.training.update_clip_norm!r}")
    return parse_policy(text, "user-level sweep policy (device DP only)")


def _eps(value: float) -> str:
    return "none" if math.isinf(value) else f"{value:g}"


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "nan")


def to_json(setup: UserSweepSetup, points: Sequence[UserSweepPoint]) -> dict[str, Any]:
    """The sweep as JSON (infinities as the string "inf": JSON has no number for them).

    ``privacy.user_level.utility_bound`` reads it for ``hearth-privacy plan user``.
    """
    return {
        "setup": asdict(setup),
        "loss_target": LOSS_TARGET,
        "points": [{k: _json_number(v) for k, v in asdict(p).items()} for p in points],
    }


def _label(point: UserSweepPoint) -> str:
    if point.noise_multiplier == 0 and point.local_noise > 0:
        return "none (device DP only)"
    return _eps(point.target_epsilon)


def _markdown(setup: UserSweepSetup, points: Sequence[UserSweepPoint]) -> str:
    scale = (
        f"z x {setup.population:,} / {SHIPPED_POPULATION:,} (the shipped population's noise "
        "on the mean; epsilons are that population's)"
        if setup.shipped_scale
        else "z"
    )
    head = (
        f"Population {setup.population:,}, q = {setup.sampling:g} (expected cohort "
        f"{setup.sampling * setup.population:g}, min_cohort {setup.min_cohort}), "
        f"{setup.campaign_rounds} rounds trained; z planned for {setup.horizon_rounds} rounds "
        f"in {setup.horizon_days:g} days at delta {setup.delta:g} (user-level, facing readers "
        f"of the model; facing the server: none, no SecAgg+ in process); run at {scale}. "
        f"Device: epsilon cap {setup.device_epsilon_cap:g} per example (delta "
        f"{setup.device_delta:g}), local noise {setup.local_noise:.3f} (device epsilon "
        f"{setup.device_epsilon_round:.2f} a round, {setup.device_rounds_within_cap} rounds "
        f"a day of data within the cap), update clip {setup.update_clip:g}; data: median "
        f"{setup.examples_per_device:.0f} training examples a device, expected DP-SGD batch "
        f"{setup.expected_batch:.0f}; none: no DP at all."
    )
    lines = [
        head,
        "",
        "| user epsilon target | z | noise std on mean | user eps (campaign) "
        "| user eps (horizon) | local noise | learning rate | top-1 | top-3 | relative loss "
        "| mean cohort | update norm median / p90 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {_label(p)} | {p.noise_multiplier:.3f} | {p.noise_std_on_mean:.4f} "
            f"| {_eps(round(p.epsilon_campaign, 3)) if p.noise_multiplier else 'none'} "
            f"| {_eps(round(p.epsilon_horizon, 3)) if p.noise_multiplier else 'none'} "
            f"| {p.local_noise:.3f} | {p.learning_rate:g} | {p.top1:.3f} | {p.top3:.3f} "
            f"| {p.relative_loss:+.1%} | {p.mean_cohort:.0f} "
            f"| {p.update_norm_median:.3g} / {p.update_norm_p90:.3g} |"
            for p in points
        ),
    ]
    return "\n".join(lines) + "\n"


def write_user_outputs(
    setup: UserSweepSetup, points: Sequence[UserSweepPoint], out: Path
) -> tuple[Path, Path, Path]:
    """A PNG plot, a Markdown table and the JSON ``plan user`` reads."""
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    out.mkdir(parents=True, exist_ok=True)
    finite = sorted(
        (p for p in points if math.isfinite(p.target_epsilon)), key=lambda p: p.target_epsilon
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [p.target_epsilon for p in finite], [p.top1 for p in finite], "o-", label="user-level DP"
    )
    for p in points:
        if math.isinf(p.target_epsilon) and p.noise_multiplier == 0 and p.local_noise > 0:
            ax.axhline(p.top1, color="orange", linestyle="-.", label="device DP only")
        elif is_baseline(p):
            ax.axhline(p.top1, color="green", linestyle="--", label="no noise (own learning rate)")
            ax.axhline(
                p.top1 * (1 - LOSS_TARGET), color="gray", linestyle=":", label="5 % below it"
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel(
        f"user-level epsilon over {setup.horizon_rounds} rounds (delta {setup.delta:g}, q "
        f"{setup.sampling:g})"
    )
    ax.set_ylabel("held-out top-1 next-action accuracy")
    ax.set_title(f"{setup.population:,} devices, {setup.campaign_rounds} rounds trained")
    ax.legend()
    fig.tight_layout()
    png = out / "user_sweep.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    table = out / "user_sweep.md"
    table.write_text(_markdown(setup, points))
    data = out / SWEEP_JSON
    data.write_text(json.dumps(to_json(setup, points), indent=2) + "\n")
    return png, table, data


__all__ = [
    "DEFAULT_TARGETS",
    "LEARNING_RATE_GRID",
    "LOSS_TARGET",
    "SWEEP_JSON",
    "DeviceSpend",
    "UserSweepPoint",
    "UserSweepSetup",
    "device_spend",
    "horizon_rounds",
    "is_baseline",
    "load_devices",
    "noise_for",
    "policy_at",
    "run_user_sweep",
    "write_user_outputs",
]
