"""The deployment path at fleet size: 100 SuperNodes, SecAgg+ with distributed noise.

One ``hearth-server up`` and ``devices`` ``hearth join`` processes on 127.0.0.1 (the
machinery of ``simulations.deployment``, TLS and SuperNode authentication included)
run the same two-round campaign twice, side by side: plain FedAvg, then SecAgg+ with
each device adding its share of the central noise before masking. Both run under
the same pinned policy with distributed noise (a device pins its policy when it
joins), so the only difference is secure aggregation: the share itself is one
Gaussian draw per parameter. The second round of each campaign is timed
(checkpoint to checkpoint), as in the ``deployment`` subject.

Processes: one zygote (``client.deployment.zygote``) imports torch, Flower's
SuperNode and hearth's runner once, and every device process is forked from it:
each device's ``hearth join``, its SuperNode and one ClientApp task per message,
still separate processes, none a thread of another. Pages the children do not write
stay shared, so the kernel holds them once; a laptop starts fresh processes
(``HEARTH_ZYGOTE`` unset), so a laptop's device costs what a fresh ``hearth join``
does, not these figures. The round time no longer includes every task importing
torch.

Memory: proportional set size (PSS: a page shared by N processes counts 1/N in
each), summed over every federation process: the SuperLink side (``hearth-server up``
and its children), the zygote, and each device's processes, grouped by the
HEARTH_HOME of the request that forked them (the zygote keeps it; they are the
zygote's children, not ``hearth join``'s). Sampled every ``PSS_EVERY`` seconds;
the drop in the machine's available memory, sampled every second, is the other
figure, and on a shared machine it also moves with everyone else's work. A guard
stops the federation if less than ``MIN_AVAILABLE_BYTES`` remain.

Task slots: at most ``task_slots`` ClientApp tasks of the whole fleet run at once
(``client.deployment.task_slots``), the same for both campaigns. One machine stands in
for a hundred laptops, each of which would train on its own cores; on two cores a
round trains no faster with every device at once, and each training task holds a few
hundred MiB of its own, so a round of 100 all at once needs ~45 GiB (README,
"deployment"). The slots cap memory, not the protocol: every device still takes part
in every stage, and SecAgg+'s extra stages wait for slots like training does.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from client.deployment.zygote_client import children as zygote_children
from simulations.benchmarks import Measurement, write_results
from simulations.benchmarks.deployment import _Campaign, _campaign, _prioritise_superlink
from simulations.deployment import DistributedNoise, Federation, federation

SUBJECT = "fleet"
ROUNDS = 2
COHORT_FRACTION = 0.5  # the shares cover any half of the devices: stragglers may drop


def round_timeout(devices: int) -> float:
    """Every device's task imports torch at once: minutes on a loaded two-core machine."""
    return max(300.0, 15.0 * devices)


# The machine is shared: below this much available memory the federation is stopped
# rather than let the kernel's OOM killer pick someone's process.
MIN_AVAILABLE_BYTES = 2 * 2**30
# What one device's processes hold at a round's peak, forked by the zygote: 461 MiB PSS on
# average at 20 SuperNodes with every device training at once, 71 MiB of it idle (`hearth
# join` and its SuperNode); a task's training memory is its own. A run at 100 without task
# slots had every device training at once and took the machine's 23 GB faster than the
# guard's samples (load ~300); it was killed by hand.
DEVICE_IDLE_BYTES = 75 * 2**20
TASK_PEAK_BYTES = 400 * 2**20
SERVER_BYTES = 700 * 2**20
TASK_SLOTS = 8
FLEET = 100
PSS_EVERY = 10  # seconds between PSS samples (each walks ~300 page tables: CPU)


class OutOfMemory(RuntimeError):
    """The federation was stopped: the machine was running out of memory."""


def _pss(proc: psutil.Process) -> int:
    """Proportional set size: each shared page divided among the processes mapping it."""
    with contextlib.suppress(psutil.Error):
        return int(proc.memory_full_info().pss)
    return 0


def _tree(root: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    return []


@dataclass(frozen=True)
class FleetMemory:
    """One sample of the federation's PSS: server side, the zygote, each device (by home)."""

    server: int
    zygote: int
    devices: dict[str, int]
    processes: int

    @property
    def total(self) -> int:
        """Every federation process, each shared page counted once."""
        return self.server + self.zygote + sum(self.devices.values())


def fleet_memory(fed: Federation) -> FleetMemory:
    """PSS of every federation process; a device's processes are grouped by its HEARTH_HOME.

    They are the zygote's children, not ``hearth join``'s, so the zygote says which
    device (the HEARTH_HOME of the request) each one runs for.
    """
    assert fed.zygote is not None and fed.zygote_socket is not None
    server = _tree(fed.up.proc.pid)
    devices: dict[str, int] = {}
    listed = zygote_children(fed.zygote_socket)
    for child in listed:
        home = child.home or "?"
        devices[home] = devices.get(home, 0) + _pss(psutil.Process(child.pid))
    return FleetMemory(
        server=sum(_pss(p) for p in server),
        zygote=_pss(psutil.Process(fed.zygote.proc.pid)),
        devices=devices,
        processes=len(server) + 1 + len(listed),
    )


@dataclass
class _FleetSampler:
    """Peak PSS of the whole federation and of one device; the machine's memory drop."""

    fed: Federation
    peak: FleetMemory | None = None
    peak_device: int = 0
    peak_processes: int = 0
    baseline_available: int = field(default_factory=lambda: psutil.virtual_memory().available)
    peak_drop: int = 0
    out_of_memory: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def guard(self) -> None:
        """Track the available memory; stop the federation below ``MIN_AVAILABLE_BYTES``."""
        available = psutil.virtual_memory().available
        self.peak_drop = max(self.peak_drop, self.baseline_available - available)
        if available < MIN_AVAILABLE_BYTES and not self.out_of_memory:
            self.out_of_memory = True
            for process in [*self.fed.joins, self.fed.up]:
                process.kill(signal.SIGTERM)
            _thread.interrupt_main()  # the campaign's wait ends; the federation unwinds

    def sample(self) -> FleetMemory:
        """One PSS sample of every federation process."""
        memory = fleet_memory(self.fed)
        if self.peak is None or memory.total > self.peak.total:
            self.peak = memory
        self.peak_device = max([self.peak_device, *memory.devices.values()])
        self.peak_processes = max(self.peak_processes, memory.processes)
        return memory

    def _loop(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            with contextlib.suppress(psutil.Error, OSError):
                self.guard()
                if tick % PSS_EVERY == 0:  # PSS walks every page table: not every second
                    self.sample()
            tick += 1

    def __enter__(self) -> _FleetSampler:
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


def _first_round(fed: Federation, secaggplus: bool, round_timeout: float) -> _Campaign:
    """A one-round campaign, timed from ``flwr run`` to its checkpoint (ServerApp start too)."""
    checkpoints = fed.root / f"campaign-{'secagg' if secaggplus else 'plain'}"
    overrides: dict[str, object] = {
        "num-server-rounds": 1,
        "secaggplus": secaggplus,
        "round-timeout": round_timeout,
        "checkpoint-dir": str(checkpoints),
        "policy-file": str(fed.policy),
        "bundle-signature": fed.token(),
    }
    started = time.time()
    log = fed.flwr_run(overrides, timeout=round_timeout * 5)
    done = checkpoints / "round-0001.json"
    deadline = time.monotonic() + round_timeout * 5
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # `flwr run --stream` may return early on a loaded machine
    if not done.exists():
        raise RuntimeError(f"the one-round campaign did not finish:\n{log[-2000:]}")
    trained = int(json.loads(done.read_text())["fit"].get("clients_trained", 0))
    return _Campaign(done.stat().st_mtime - started, 0.0, 0.0, trained)


def _timed(fed: Federation, secaggplus: bool, rounds: int, timeout: float) -> _Campaign:
    if rounds == 1:
        return _first_round(fed, secaggplus, timeout)
    return _campaign(fed, secaggplus=secaggplus, rounds=rounds, round_timeout=timeout)


def measure(devices: int, rounds: int = ROUNDS, task_slots: int = TASK_SLOTS) -> list[Measurement]:
    """Plain FedAvg and SecAgg+ with distributed noise at ``devices`` SuperNodes."""
    noise = DistributedNoise(
        noise_multiplier=1.0, min_cohort=max(2, int(devices * COHORT_FRACTION))
    )
    available = psutil.virtual_memory().available
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="hearth-bench-fleet-") as tmp,
        federation(
            Path(tmp),
            devices,
            keep_sent=False,
            device_epsilon_cap=1000.0,
            distributed_noise=noise,
            zygote=True,
            task_slots=task_slots,
        ) as fed,
    ):
        ready = time.perf_counter() - started
        sampler = _FleetSampler(fed, baseline_available=available)
        idle = sampler.sample()
        try:
            with sampler:
                _prioritise_superlink(fed)
                timeout = round_timeout(devices)
                plain = _timed(fed, False, rounds, timeout)
                secagg = _timed(fed, True, rounds, timeout)
        except KeyboardInterrupt:
            if not sampler.out_of_memory:
                raise
            peak = sampler.peak.total if sampler.peak else 0
            raise OutOfMemory(
                f"{devices} SuperNodes: stopped at {peak / 2**20:,.0f} MiB PSS, "
                f"the machine had less than {MIN_AVAILABLE_BYTES / 2**30:g} GiB available"
            ) from None
    timed = (plain, secagg)
    return _measurements(devices, noise, timed, sampler, idle, ready, (rounds, task_slots))


def _measurements(
    devices: int,
    noise: DistributedNoise,
    campaigns: tuple[_Campaign, _Campaign],
    sampler: _FleetSampler,
    idle: FleetMemory,
    ready: float,
    shape: tuple[int, int],
) -> list[Measurement]:
    plain, secagg = campaigns
    rounds, slots = shape
    timed = "round 1 of 1, from `flwr run`" if rounds == 1 else f"round {rounds} of {rounds}"
    timed += f"; at most {slots} tasks of the fleet at once"
    peak = sampler.peak or idle
    at = f"{devices} SuperNodes"
    mib = 2**20
    out = [
        Measurement(
            SUBJECT,
            f"round time, {label}, {at}",
            c.round_seconds,
            "s",
            note=f"{c.trained} of {devices} devices in the aggregate; {timed}",
        )
        for label, c in (
            ("FedAvg", plain),
            (f"SecAgg+ with distributed noise (cohort {noise.min_cohort})", secagg),
        )
    ]
    ratio = secagg.round_seconds / plain.round_seconds
    out += [
        Measurement(
            SUBJECT,
            f"SecAgg+ with distributed noise / FedAvg round time, {at}",
            ratio,
            "x",
            target="<= 2",
            passed=ratio <= 2.0,
        ),
        Measurement(
            SUBJECT,
            f"peak PSS of every federation process, {at}",
            peak.total / mib,
            "MiB",
            note=f"{sampler.peak_processes} processes at most; idle after joining: "
            f"{idle.total / mib:,.0f} MiB",
        ),
        Measurement(
            SUBJECT,
            f"PSS per device at that peak (mean), {at}",
            sum(peak.devices.values()) / max(1, len(peak.devices)) / mib,
            "MiB",
            note=f"idle after joining: {sum(idle.devices.values()) / max(1, devices) / mib:,.0f}"
            " MiB; hearth join + SuperNode + its ClientApp task(s)",
        ),
        Measurement(SUBJECT, f"peak PSS of one device, {at}", sampler.peak_device / mib, "MiB"),
        Measurement(SUBJECT, f"PSS, server side, at that peak, {at}", peak.server / mib, "MiB"),
        Measurement(
            SUBJECT,
            f"PSS of the zygote, {at}",
            peak.zygote / mib,
            "MiB",
            note="its share of the preloaded pages every device process maps",
        ),
        Measurement(
            SUBJECT,
            f"peak drop in available memory, {at}",
            sampler.peak_drop / mib,
            "MiB",
            note="machine-wide: moves with other work on a shared machine",
        ),
        Measurement(SUBJECT, f"time to start and join, {at}", ready, "s"),
    ]
    return out


def fleet_bytes(devices: int, task_slots: int) -> int:
    """What a fleet holds at a round's peak: every device joined, ``task_slots`` tasks training."""
    busy = min(devices, task_slots)
    return SERVER_BYTES + devices * DEVICE_IDLE_BYTES + busy * TASK_PEAK_BYTES


def largest_fleet(task_slots: int = TASK_SLOTS) -> int:
    """The most SuperNodes (up to 100) whose round fits in this machine's available memory."""
    spare = psutil.virtual_memory().available - MIN_AVAILABLE_BYTES
    fits = [n for n in range(2, FLEET + 1) if fleet_bytes(n, task_slots) <= spare]
    return max([2, *fits])


def run(
    quick: bool,
    sizes: tuple[int, ...] | None = None,
    rounds: int = ROUNDS,
    task_slots: int = TASK_SLOTS,
) -> list[Measurement]:
    """Quick: 10 SuperNodes. Full: 100, or as many as the available memory holds."""
    results: list[Measurement] = []
    for devices in sizes or ((10,) if quick else (largest_fleet(task_slots),)):
        holds = largest_fleet(task_slots)
        if devices > holds:
            need = fleet_bytes(devices, task_slots) / 2**30
            raise SystemExit(
                f"{devices} SuperNodes with {task_slots} task slots need ~{need:.0f} GiB at a "
                f"round's peak; this machine holds {holds}: pass --devices {holds} or fewer, "
                "or fewer --task-slots"
            )
        results += measure(devices, rounds, task_slots)
    return results


if __name__ == "__main__":
    import argparse

    # SIGINT or SIGTERM unwind the federation (its processes stop), also when started in
    # the background, where SIGINT comes ignored; the memory guard relies on SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, nargs="+", default=[100])
    parser.add_argument("--out", type=Path, default=Path("bench/fleet"), help="JSON + Markdown")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help="1: time the only round, from `flwr run`"
    )
    parser.add_argument(
        "--task-slots", type=int, default=TASK_SLOTS, help="most tasks of the fleet at once"
    )
    args = parser.parse_args()
    if args.task_slots < 1:
        parser.error("--task-slots must be at least 1")
    measured = run(False, tuple(args.devices), args.rounds, args.task_slots)
    write_results(args.out, measured)
    for m in measured:
        print(f"{m.name}: {m.value:,.2f} {m.unit} {m.note}", flush=True)
