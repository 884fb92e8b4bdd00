"""The resource governor: train only when the laptop will not notice.

Before a round, the governor asks four questions, with thresholds from the
privacy policy's ``[governor]`` section:

* has the employee been idle for ``idle_seconds``? (X11 screensaver idle time;
  a machine without a display session has no one to disturb and counts as idle)
* is it on mains power, if ``require_mains_power``? (no battery counts as mains)
* is the network unmetered? (``client.deployment.metering``: what the OS says; where it cannot
  say, the network counts as metered unless ``allow_unknown_metering``)
* is the CPU that *other* programs use below ``max_cpu_percent``? (sampled briefly:
  the machine's busy time minus hearth's own, the SuperNode and every process under
  it, so a laptop's own round, or a second SuperNode on a test machine, never makes
  it decline; where it cannot be measured it counts as busy, unless the policy's
  ``max_cpu_percent = 100`` asks nothing of the CPU)

Headless machines and test set-ups: without a display session nobody can be
typing, so the laptop counts as idle; without a battery it counts as on mains. A
tester who types on the machine that trains, on battery or without NetworkManager
pins ``privacy/tester_policy.toml`` (``hearth join --policy``), whose
``[governor]`` section is the documented override.

Any "no" declines the round with a reason the employee sees in ``hearth status``;
the server sees only ``UNAVAILABLE``, as for every reason of the laptop's.
When it trains, it trains at low priority (``nice``) with capped threads.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import psutil

from client.deployment.metering import Metering, network_metering
from client.learning.threads import TRAINING_THREADS
from privacy.policy import GovernorSection

NICE_INCREMENT: Final = 10
CPU_SAMPLE_SECONDS: Final = 0.5
# The process at the top of hearth's own tree on a laptop (``hearth join`` starts it).
SUPERNODE_MARKERS: Final = ("client.deployment.supernode", "flower-supernode")


@dataclass(frozen=True)
class Decision:
    """Whether to train now, and why not."""

    allowed: bool
    reason: str = ""


def seconds_since_last_input() -> float:
    """Idle time of the X11 session, or infinity without a display session."""
    if not os.environ.get("DISPLAY"):
        return float("inf")
    try:
        from Xlib import display  # noqa: PLC0415 (optional platform backend)

        disp = display.Display()
        try:
            if not disp.has_extension("MIT-SCREEN-SAVER"):
                return float("inf")
            info = disp.screen().root.screensaver_query_info()
            return float(info.idle) / 1000.0
        finally:
            disp.close()
    except Exception:  # no usable display: nobody is typing on it
        return float("inf")


def on_mains_power() -> bool:
    """True on mains power, or on a machine without a battery."""
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    return True if battery is None else bool(battery.power_plugged)


def hearth_processes(start: psutil.Process | None = None) -> list[psutil.Process]:
    """Hearth's own processes: the SuperNode above ``start`` and everything under it.

    Without a SuperNode above it (a test, a simulation), ``start`` and its children.
    """
    start = start or psutil.Process()
    root = start
    for ancestor in [start, *start.parents()]:
        with contextlib.suppress(psutil.Error):
            if any(m in part for part in ancestor.cmdline()[:3] for m in SUPERNODE_MARKERS):
                root = ancestor
                break
    return [root, *root.children(recursive=True)]


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, summed over its CPUs."""
    fields = psutil.cpu_times()._asdict()
    # Linux counts guest time inside user time as well.
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


def _own_seconds(processes: Sequence[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
    return seconds


def others_cpu_percent(
    interval: float = CPU_SAMPLE_SECONDS,
    own: Callable[[], Sequence[psutil.Process]] = hearth_processes,
    machine: Callable[[], tuple[float, float]] = _machine_busy,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """CPU used by programs other than hearth's own over ``interval``, in percent, or None.

    Same scale as ``psutil.cpu_percent``: 100 means every CPU busy. ``None`` when it
    cannot be measured (the governor then counts the CPU as busy).
    """
    try:
        processes = own()
        busy0, total0 = machine()
        own0 = _own_seconds(processes)
        sleep(interval)
        busy1, total1 = machine()
        own1 = _own_seconds(processes)
    except (psutil.Error, OSError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    ours = sum(own1[pid] - own0[pid] for pid in own1.keys() & own0.keys())
    return max(0.0, min(100.0, 100.0 * (busy1 - busy0 - ours) / elapsed))


@dataclass(frozen=True)
class Governor:
    """The four checks, with probes that tests can replace."""

    settings: GovernorSection
    idle: Callable[[], float] = seconds_since_last_input
    mains: Callable[[], bool] = on_mains_power
    cpu: Callable[[], float | None] = others_cpu_percent
    metering: Callable[[], Metering] = network_metering

    def decide(self) -> Decision:
        """Allow training now, or say which condition is not met."""
        idle = self.idle()
        if idle < self.settings.idle_seconds:
            return Decision(
                False, f"not idle: last input {idle:.0f}s ago (< {self.settings.idle_seconds:g}s)"
            )
        if self.settings.require_mains_power and not self.mains():
            return Decision(False, "on battery: training waits for mains power")
        metering = self.metering()
        if metering is Metering.METERED:
            return Decision(False, "metered network: training waits for an unmetered one")
        if metering is Metering.UNKNOWN and not self.settings.allow_unknown_metering:
            return Decision(
                False,
                "network metering unknown (the OS does not say), so it counts as metered: "
                "training waits",
            )
        limit = self.settings.max_cpu_percent
        if limit >= 100:
            return Decision(True)  # the policy asks nothing of the CPU
        busy = self.cpu()
        if busy is None:
            return Decision(
                False, "CPU use of other programs unknown (could not be measured): training waits"
            )
        if busy > limit:
            return Decision(False, f"CPU busy with other programs: {busy:.0f}% (> {limit:g}%)")
        return Decision(True)


def lower_priority() -> None:
    """Run this process at low priority with capped threads (call before any app code).

    Threads are capped through the environment, which torch reads when it is first
    imported; the ClientApp sets the same cap again when it trains. Importing torch
    here made every SecAgg+ key-exchange message pay seconds for a library it never used.
    """
    with contextlib.suppress(OSError):  # nice can only fail on odd platforms
        os.nice(NICE_INCREMENT)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(TRAINING_THREADS)


__all__ = ["Decision", "Governor", "hearth_processes", "lower_priority", "others_cpu_percent"]
