"""The deployment path at fleet size: 100 SuperNodes, SecAgg+ with distributed noise.

One ``hearth-server up`` and ``devices`` ``hearth join`` processes on 127.0.0.1 (the
machinery of ``simulations.deployment``, TLS and SuperNode authentication included)
run the same two-round campaign twice, side by side: plain FedAvg, then SecAgg+ with
each device adding its share of the central noise before masking. Both run under
the same pinned policy with distributed noise (a device pins its policy when it
joins), so the only difference is secure aggregation: the share itself is one
Gaussian draw per parameter. The second round of each campaign is timed
(checkpoint to checkpoint), as in the ``deployment`` subject.

Memory: every process of the federation (the SuperLink with its ServerApp, every
device's ``hearth join`` with its SuperNode and ClientApp processes) is sampled
once a second. The RSS sum counts shared pages (Python, torch's libraries) once per
process, so it overstates; the drop in the machine's available memory is the other
bound, and on a shared machine it also moves with everyone else's work.

100 SuperNodes do not fit on a 23 GB machine: a device is three Python processes
during a round (``hearth join``, its SuperNode, and the ClientApp task that imports
torch), about 480 MiB at the peak, and every device of a round runs at once. The
full run takes as many as the available memory holds (``largest_fleet``), and a
guard stops the federation if the machine runs low anyway.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from simulations.benchmarks import Measurement, write_results
from simulations.benchmarks.deployment import _campaign, _prioritise_superlink
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
# What one device's processes hold at the peak of a round, measured at 10 SuperNodes:
# `hearth join` 63 MiB, its SuperNode 93 MiB, the ClientApp task (torch) ~300 MiB (USS).
DEVICE_PEAK_BYTES = 480 * 2**20
FLEET = 100


class OutOfMemory(RuntimeError):
    """The federation was stopped: the machine was running out of memory."""


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    return total


@dataclass
class _FleetSampler:
    """Peak RSS of the whole federation, of one device, and of the machine's memory use."""

    fed: Federation
    peak_total: int = 0
    peak_server: int = 0
    peak_device: int = 0
    baseline_available: int = field(default_factory=lambda: psutil.virtual_memory().available)
    peak_drop: int = 0
    out_of_memory: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        """One sample of every process tree of the federation."""
        server = _tree_rss(psutil.Process(self.fed.up.proc.pid))
        devices = [_tree_rss(psutil.Process(j.proc.pid)) for j in self.fed.joins if j.running]
        self.peak_server = max(self.peak_server, server)
        self.peak_device = max([self.peak_device, *devices])
        self.peak_total = max(self.peak_total, server + sum(devices))
        available = psutil.virtual_memory().available
        self.peak_drop = max(self.peak_drop, self.baseline_available - available)
        if available < MIN_AVAILABLE_BYTES and not self.out_of_memory:
            self.out_of_memory = True
            for process in [*self.fed.joins, self.fed.up]:
                process.kill(signal.SIGTERM)
            _thread.interrupt_main()  # the campaign's wait ends; the federation unwinds

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(psutil.Error):
                self.sample()

    def __enter__(self) -> _FleetSampler:
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


def measure(devices: int) -> list[Measurement]:
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
        ) as fed,
    ):
        ready = time.perf_counter() - started
        sampler = _FleetSampler(fed, baseline_available=available)
        sampler.sample()
        idle_total = sampler.peak_total
        try:
            with sampler:
                _prioritise_superlink(fed)
                timeout = round_timeout(devices)
                plain = _campaign(fed, secaggplus=False, rounds=ROUNDS, round_timeout=timeout)
                secagg = _campaign(fed, secaggplus=True, rounds=ROUNDS, round_timeout=timeout)
        except KeyboardInterrupt:
            if not sampler.out_of_memory:
                raise
            raise OutOfMemory(
                f"{devices} SuperNodes: stopped at {sampler.peak_total / 2**20:,.0f} MiB RSS, "
                f"the machine had less than {MIN_AVAILABLE_BYTES / 2**30:g} GiB available"
            ) from None
    at = f"{devices} SuperNodes"
    mib = 2**20
    out = [
        Measurement(
            SUBJECT,
            f"round time, {label}, {at}",
            c.round_seconds,
            "s",
            note=f"{c.trained} of {devices} devices in the aggregate",
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
            f"peak RSS of every federation process, {at}",
            sampler.peak_total / mib,
            "MiB",
            note=f"idle after joining: {idle_total / mib:,.0f} MiB; sums shared pages "
            "once per process",
        ),
        Measurement(SUBJECT, f"peak RSS, server side, {at}", sampler.peak_server / mib, "MiB"),
        Measurement(SUBJECT, f"peak RSS of one device, {at}", sampler.peak_device / mib, "MiB"),
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


def largest_fleet() -> int:
    """The most SuperNodes (up to 100) whose round fits in this machine's available memory."""
    spare = psutil.virtual_memory().available - MIN_AVAILABLE_BYTES
    return max(2, min(FLEET, int(spare // DEVICE_PEAK_BYTES)))


def run(quick: bool, sizes: tuple[int, ...] | None = None) -> list[Measurement]:
    """Quick: 10 SuperNodes. Full: 100, or as many as the available memory holds."""
    results: list[Measurement] = []
    for devices in sizes or ((10,) if quick else (largest_fleet(),)):
        results += measure(devices)
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
    args = parser.parse_args()
    measured = run(False, tuple(args.devices))
    write_results(args.out, measured)
    for m in measured:
        print(f"{m.name}: {m.value:,.2f} {m.unit} {m.note}", flush=True)
