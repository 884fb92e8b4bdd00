"""Company scale: round time and peak memory at 100, 300 and 1,000 devices per round.

One population of 10,000 synthetic employees (seeded once, reused), and for each
cohort size a real ``flwr run .`` on the simulation engine under the shipped
policy where its cohort rule can be met (user-level DP, distributed noise), else
the demo policy. A round's time is the gap between two consecutive checkpoints
(the first round also pays the engine's start and every worker's first
featurizing); peak RSS is the whole process tree's (SuperLink, ServerApp, Ray
workers), sampled every 0.2 s. The profile of one simulated device's round
(``profile_device_round``) says where a device's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import itertools
import os
import pstats
import threading
import time
from pathlib import Path

import psutil
from flwr.common import Scalar

from client.storage.home import hearth_home
from simulations.benchmarks import Measurement, markdown, write_results
from simulations.campaign import default_campaign
from simulations.demo import DemoSettings, run_demo
from simulations.flwr_runner import local_actors

SUBJECT = "scale"
POPULATION = 10_000
SIZES = (100, 300, 1000)
TARGET_SECONDS_AT_1000 = 60.0


class _TreeUsage:
    """Peak RSS and CPU time of this process and every descendant, sampled in a thread.

    CPU is the sum over every process ever seen of its last-seen user + system time,
    so processes that ended (a Ray worker) still count up to their last sample. The
    list of descendants is refreshed once a second, not at every sample: finding them
    reads every process on the machine, and that would count against the tree.
    """

    SAMPLE_SECONDS = 0.2
    REFRESH_SECONDS = 1.0

    def __init__(self) -> None:
        self.peak = 0
        self._cpu: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self.cpu_series: list[tuple[float, float]] = []  # (wall clock, CPU-seconds so far)
        self.snapshots: list[tuple[float, dict[int, float]]] = []  # CPU-s per process
        self.load: list[float] = []  # the machine's 1-minute load average, per sample
        self._stop = threading.Event()

    def __enter__(self) -> _TreeUsage:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        procs: list[psutil.Process] = [me]
        refreshed = 0.0
        while not self._stop.is_set():
            if time.monotonic() - refreshed >= self.REFRESH_SECONDS:
                procs = [me, *me.children(recursive=True)]
                refreshed = time.monotonic()
                for proc in procs:  # a Ray worker starts idle and becomes an actor
                    with contextlib.suppress(psutil.Error):
                        self.roles[proc.pid] = _role(proc, me)
            total = 0
            for proc in procs:
                try:
                    with proc.oneshot():
                        total += proc.memory_info().rss
                        times = proc.cpu_times()
                        self._cpu[proc.pid] = times.user + times.system
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            now = time.time()
            self.cpu_series.append((now, sum(self._cpu.values())))
            self.snapshots.append((now, dict(self._cpu)))
            self.load.append(os.getloadavg()[0])
            time.sleep(self.SAMPLE_SECONDS)

    def cpu_by_role(self, start: float, end: float) -> dict[str, float]:
        """CPU-seconds each kind of process used between two wall-clock times."""
        before = _snapshot_at(self.snapshots, start)
        after = _snapshot_at(self.snapshots, end)
        used: dict[str, float] = {}
        for pid, cpu in after.items():
            role = self.roles.get(pid, "other")
            used[role] = used.get(role, 0.0) + cpu - before.get(pid, 0.0)
        return dict(sorted(used.items(), key=lambda item: -item[1]))

    def load_between(self, start: float, end: float) -> list[float]:
        """The machine's 1-minute load averages sampled between two wall-clock times."""
        return [
            load
            for (stamp, _), load in zip(self.cpu_series, self.load, strict=True)
            if start <= stamp <= end
        ]

    def cpu_at(self, when: float) -> float:
        """CPU-seconds the tree had used at wall-clock time ``when`` (nearest sample)."""
        used = 0.0
        for stamp, cpu in self.cpu_series:
            if stamp > when:
                break
            used = cpu
        return used

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _snapshot_at(snapshots: list[tuple[float, dict[int, float]]], when: float) -> dict[int, float]:
    """The last per-process CPU snapshot taken at or before ``when``."""
    found: dict[int, float] = {}
    for stamp, cpu in snapshots:
        if stamp > when:
            break
        found = cpu
    return found


def _role(proc: psutil.Process, me: psutil.Process) -> str:
    """What a process of the tree is, in a word: a benchmark reads CPU by role."""
    if proc.pid == me.pid:
        return "benchmark"
    cmdline = " ".join(proc.cmdline())
    for marker, role in (
        ("ClientAppActor", "ClientApp actors"),
        ("flwr-simulation", "ServerApp + engine"),
        ("flower-superlink", "SuperLink"),
        ("flower-superexec", "SuperExec"),
        ("flwr.cli", "flwr run"),
    ):
        if marker in cmdline:
            return role
    return "Ray daemons"


def _round_stamps(checkpoints: Path) -> list[float]:
    """When each round's checkpoint landed; the gaps are the rounds after the first."""
    return sorted(p.stat().st_mtime for p in checkpoints.glob("round-*.json"))


def measure(
    root: Path, population: int, per_round: int, rounds: int = 3, actors: int | None = None
) -> list[Measurement]:
    """One campaign of ``rounds`` rounds at ``per_round`` devices; its round time and memory."""
    settings = DemoSettings(
        root=root,
        employees=population,
        rounds=rounds,
        hours=1.0,
        per_round=per_round,
        evaluate_per_round=min(per_round, 100),
        workers=2,
        score=False,
        actors=actors,
        # Every size trains the company campaign's model, also where the demo policy runs.
        extra_config=(("hidden-width", default_campaign().hidden_width),),
    )
    with _TreeUsage() as usage:
        result = run_demo(settings)
    stamps = _round_stamps(result.checkpoint_dir)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    cpu = [usage.cpu_at(b) - usage.cpu_at(a) for a, b in itertools.pairwise(stamps)]
    if not gaps:
        return [
            Measurement(SUBJECT, f"round at {per_round} devices", float("nan"), "s", note="failed")
        ]
    steady = min(gaps)
    steady_cpu = cpu[gaps.index(steady)]
    steady_at = stamps[gaps.index(steady)]
    round_load = usage.load_between(steady_at, steady_at + steady) or usage.load
    load = (
        f"; machine load {min(round_load):.1f}-{max(round_load):.1f} ({os.cpu_count()} CPUs)"
        if round_load
        else ""
    )
    by_role = usage.cpu_by_role(steady_at, steady_at + steady)
    actors_note = f"; {actors or local_actors()} ClientApp actors; CPU-s by process: " + ", ".join(
        f"{role} {cpu:.0f}" for role, cpu in by_role.items() if cpu >= 0.5
    )
    trained = [int(r["fit"].get("clients_trained", 0)) for r in result.rounds]
    # The gap after checkpoint k is round k + 1's (0-based: rounds[k + 1]).
    steady_round = gaps.index(steady) + 1
    devices = (trained[steady_round] if steady_round < len(trained) else 0) or per_round
    target = f"<= {TARGET_SECONDS_AT_1000:g} s" if per_round >= 1000 else None
    return [
        Measurement(
            SUBJECT,
            f"round time, {per_round} devices/round of {population:,}",
            steady,
            "s",
            target,
            steady <= TARGET_SECONDS_AT_1000 if target else None,
            note=f"rounds after the first: {', '.join(f'{g:.1f}' for g in gaps)} s; "
            f"trained per round {trained}{load}{actors_note}",
        ),
        Measurement(
            SUBJECT,
            f"CPU per round, process tree, {per_round}/round",
            steady_cpu,
            "CPU-s",
            note=f"rounds after the first: {', '.join(f'{c:.0f}' for c in cpu)} CPU-s",
        ),
        Measurement(
            SUBJECT,
            f"cores busy, process tree, {per_round}/round",
            steady_cpu / steady,
            "cores",
            note=f"CPU-s / wall of that round, of {os.cpu_count()} CPUs; other work on the "
            "machine takes the rest (load above)",
        ),
        Measurement(
            SUBJECT,
            f"cost per device, {per_round}/round",
            steady / devices,
            "s",
            note=f"per device that trained in that round ({devices}; Poisson sampling)",
        ),
        Measurement(
            SUBJECT,
            f"CPU per device, {per_round}/round",
            steady_cpu / devices,
            "CPU-s",
            note=f"per device that trained in that round ({devices})",
        ),
        Measurement(
            SUBJECT, f"peak RSS, process tree, {per_round}/round", usage.peak / 2**20, "MiB"
        ),
    ]


def profile_device_round(root: Path) -> str:
    """Where a simulated device's round goes, first round and steady state (cProfile).

    Seeds two fresh employees under ``root`` (their ledgers must have budget left).
    """
    from simulations.population import seed_population  # noqa: PLC0415

    seed_population(root, 2, seed=7, hours=2.0)
    from client.learning.app import HearthClient  # noqa: PLC0415
    from client.learning.device import SIM_PASSPHRASE_FILE, Device, simulated_device_home  # noqa: PLC0415
    from policy.model import ModelConfig, NextActionPolicy, get_arrays  # noqa: PLC0415
    from privacy.policy import load_policy, policy_hash  # noqa: PLC0415

    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    policy_file = root / "policy.toml"
    policy = load_policy(policy_file if policy_file.exists() else None)
    params = list(get_arrays(NextActionPolicy(ModelConfig())).values())
    config: dict[str, Scalar] = {
        "round": 1,
        "num-rounds": 3,
        "policy-hash": policy_hash(policy),
        "learning-rate": 4.0,
        "context-length": 8,
    }
    lines = []
    for number, label in ((1, "first round"), (2, "next round")):
        config["round"] = number
        device = Device(
            simulated_device_home(root, 1),
            passphrase,
            policy_file if policy_file.exists() else None,
            simulated=True,
        )
        profile = cProfile.Profile()
        profile.enable()
        HearthClient(device).fit(params, config)
        profile.disable()
        stats = pstats.Stats(profile)
        lines.append(f"## {label}: {stats.total_tt:.3f} s")  # type: ignore[attr-defined]
        lines.append(_top(stats))
    return "\n".join(lines)


def _top(stats: pstats.Stats, count: int = 12) -> str:
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][3],
        reverse=True,
    )
    return "\n".join(
        f"{cumulative:8.3f} s  {Path(file).name}:{line}({name})"
        for (file, line, name), (_, _, _, cumulative, _) in rows[:count]
    )


def growth(results: list[Measurement]) -> list[Measurement]:
    """How the cost per device grows from the smallest cohort measured to the largest."""
    per_device = {
        (m.unit, int(m.name.rsplit(" ", 1)[1].split("/")[0])): m.value
        for m in results
        if m.name.startswith(("cost per device", "CPU per device"))
    }
    sizes = sorted({size for _, size in per_device})
    if len(sizes) < 2:
        return []
    low, high = sizes[0], sizes[-1]
    return [
        Measurement(
            SUBJECT,
            f"{label} per device, {high} against {low} a round",
            per_device[(unit, high)] / per_device[(unit, low)],
            "x",
            note="1.0: linear in the cohort; above: overhead grows faster than the cohort",
        )
        for unit, label in (("s", "round time"), ("CPU-s", "CPU"))
        if (unit, high) in per_device and (unit, low) in per_device
    ]


def run(
    quick: bool,
    root: Path | None = None,
    sizes: tuple[int, ...] = SIZES,
    rounds: int = 3,
    actors: int | None = None,
) -> list[Measurement]:
    """All cohort sizes on one seeded population (quick: 1,000 enrolled, 100 a round).

    ``root`` holds the population (default: under hearth's home); an existing one
    seeded with the same settings is reused.
    """
    root = root or hearth_home() / "sim" / "bench-scale"
    population = 1000 if quick else POPULATION
    results: list[Measurement] = []
    for size in sizes[:1] if quick else sizes:
        results.extend(measure(root, population, size, rounds, actors))
    return results + growth(results)


def main(argv: list[str] | None = None) -> int:
    """Only this benchmark, on a chosen population, written as ``make bench`` writes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="population to seed or reuse")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--out", type=Path, default=Path("bench/scale"))
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cohort size (>= 2)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--actors", type=int, default=None, help="ClientApp actors (default: CPUs + spare)"
    )
    args = parser.parse_args(argv)
    results: list[Measurement] = []
    for size in args.sizes:  # written after each size: an interrupted run keeps its figures
        results += run(args.quick, args.root, (size,), args.rounds, args.actors)
        results = [m for m in results if not m.name.endswith(" a round")]  # growth: once
        write_results(args.out, results + growth(results))
    print(markdown(results + growth(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
