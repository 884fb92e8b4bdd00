"""Utility against privacy: the same federation at several device-level budgets.

For each epsilon, a privacy policy is written whose local noise multiplier is the
smallest that keeps a typical device (median sample rate, all planned steps)
within that epsilon, with the device cap set to it. Each budget runs as a real
``flwr run`` over the same synthetic employees.

``inf`` is the yardstick every "utility lost to privacy" figure is read against,
so it must be a fair one: no DP noise, no per-example clipping, no update
clipping to speak of, and its own learning rate, chosen by a small search on
validation data carved from the devices' training parts (never the held-out
data the sweep scores). With the DP campaign's rate and no clipping it
diverged and scored below the DP runs.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from client.learning.app import HELD_OUT_FRACTION
from client.learning.device import (
    SIM_PASSPHRASE_FILE,
    SIM_POLICY_FILE,
    Device,
    simulated_device_home,
)
from client.learning.featurize import split_held_out
from client.learning.training import plan_round
from privacy.accountants import noise_for_local
from privacy.policy import demo_policy_text
from server.checkpoints import read_sidecars
from simulations.campaign import campaign_train_config, default_campaign
from simulations.flwr_runner import run_app
from simulations.ground_truth import ground_truth
from simulations.inprocess import Federation, LearningRateSearch, tune_learning_rate
from simulations.population import seed_population

# An update clip no honest non-private update reaches: the policy requires one (> 0).
NO_UPDATE_CLIP = 1e6


@dataclass(frozen=True)
class SweepPoint:
    """One budget's outcome on the last round."""

    epsilon: float
    noise_multiplier: float
    top1: float
    top3: float
    bigram_top1: float
    epsilon_max: float
    learning_rate: float = 0.0


def _typical_plan(rounds: int) -> tuple[float, int]:
    """The policy's round shape over the campaign (the same on every device)."""
    planned = plan_round(campaign_train_config(private=True))
    return planned.sample_rate, planned.steps * rounds


def policy_for(epsilon: float, noise: float) -> str:
    """The demo policy (a small federation) with this budget and noise.

    No DP (``inf``): the cap raised to infinity, no central noise and the update clip
    out of reach, so nothing but the learning rate shapes the yardstick.
    """
    cap = "1e9" if math.isinf(epsilon) else f"{epsilon}"
    text = re.sub(
        r"(?m)^device_epsilon_cap = .*$", f"device_epsilon_cap = {cap}", demo_policy_text()
    )
    if math.isinf(epsilon):
        text = re.sub(r"(?m)^update_clip_norm = .*$", f"update_clip_norm = {NO_UPDATE_CLIP}", text)
        text = re.sub(
            r"(?m)^central_noise_multiplier = .*$", "central_noise_multiplier = 0.0", text
        )
    return re.sub(r"(?m)^local_noise_multiplier = .*$", f"local_noise_multiplier = {noise}", text)


def tune_non_private(root: Path, employees: int, rounds: int, seed: int) -> LearningRateSearch:
    """The no-DP run's learning rate, searched in process on the devices' training parts."""
    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    campaign = default_campaign()
    train = []
    for employee in range(employees):
        device = Device(simulated_device_home(root, employee), passphrase, simulated=True)
        part, _ = split_held_out(device.examples(campaign.context_length), HELD_OUT_FRACTION)
        train.append(part)
    federation = Federation(
        rounds=rounds,
        train=campaign_train_config(private=False),
        server_learning_rate=campaign.server_learning_rate,
        server_momentum=campaign.server_momentum,
        seed=seed,
    )
    return tune_learning_rate(train, federation, campaign.model_config())


def run_sweep(
    root: Path,
    epsilons: list[float],
    employees: int,
    rounds: int,
    seed: int = 7,
    hours: float = 8.0,
    on_search: Callable[[LearningRateSearch], None] | None = None,
) -> list[SweepPoint]:
    """Run one federation per budget; returns the last round of each."""
    seed_population(root, employees, seed, hours=hours)
    rate, total_steps = _typical_plan(rounds)
    points = []
    for epsilon in epsilons:
        noise = 0.0 if math.isinf(epsilon) else noise_for_local(epsilon, rate, total_steps, 1e-5)
        learning_rate = default_campaign().learning_rate
        if math.isinf(epsilon):
            search = tune_non_private(root, employees, rounds, seed)
            learning_rate = search.best
            if on_search is not None:
                on_search(search)
        label = "inf" if math.isinf(epsilon) else f"{epsilon:g}"
        policy_file = root / f"policy-eps-{label}.toml"
        policy_file.write_text(policy_for(epsilon, noise))
        # The simulated employees agree to this budget's policy, as real ones would
        # before a campaign; a device under another policy declines every round.
        (root / SIM_POLICY_FILE).write_text(policy_file.read_text())
        checkpoints = root / f"checkpoints-eps-{label}"
        # Each budget starts from fresh devices: a ledger from another budget would count.
        for device_dir in (root / "devices").iterdir():
            ledger = device_dir / "privacy"
            if ledger.exists():
                for file in ledger.iterdir():
                    file.unlink()
        run_app(
            num_supernodes=employees,
            run_config={
                "num-server-rounds": rounds,
                "sim-root": str(root),
                "checkpoint-dir": str(checkpoints),
                "policy-file": str(policy_file),
                "seed": seed,
                "learning-rate": learning_rate,
            },
            flwr_home=root / "flwr-home",
            log_file=root / f"flwr-eps-{label}.log",
        )
        rows = read_sidecars(checkpoints) if checkpoints.exists() else []
        if not rows or not rows[-1]["fit"].get("clients_trained", 0):
            raise RuntimeError(
                f"the run at epsilon {label} trained nothing; see {root / f'flwr-eps-{label}.log'}"
            )
        truth = ground_truth(root, employees, checkpoints)
        points.append(
            SweepPoint(
                epsilon,
                noise,
                truth.top1,
                truth.top3,
                truth.bigram_top1,
                truth.epsilon_max,
                learning_rate,
            )
        )
    return points


def write_outputs(points: list[SweepPoint], out: Path) -> tuple[Path, Path]:
    """A PNG plot and a Markdown table (plus JSON) of accuracy against epsilon."""
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    out.mkdir(parents=True, exist_ok=True)
    finite = [p for p in points if math.isfinite(p.epsilon)]
    private_inf = [p for p in points if math.isinf(p.epsilon)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p.epsilon for p in finite], [p.top1 for p in finite], "o-", label="federated, DP")
    if private_inf:
        ax.axhline(private_inf[0].top1, color="green", linestyle="--", label="federated, no DP")
    bigram = statistics.mean(p.bigram_top1 for p in points)
    ax.axhline(bigram, color="gray", linestyle=":", label="per-person bigram")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("device epsilon cap (one example on one device, delta 1e-5)")
    ax.set_ylabel("held-out top-1 next-action accuracy")
    ax.legend()
    fig.tight_layout()
    png = out / "sweep.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    lines = [
        "| epsilon | noise multiplier | learning rate | top-1 | top-3 | bigram top-1 "
        "| max device epsilon |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {p.epsilon:g} | {p.noise_multiplier:.3f} | {p.learning_rate:g} | {p.top1:.3f} | "
            f"{p.top3:.3f} | {p.bigram_top1:.3f} | {p.epsilon_max:.2f} |"
            for p in points
        ),
    ]
    table = out / "sweep.md"
    table.write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(
        json.dumps([p.__dict__ for p in points], default=str, indent=2) + "\n"
    )
    return png, table
