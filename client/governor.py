"""The resource governor: train only when the laptop will not notice.

Before a round, the governor asks four questions, with thresholds from the
privacy policy's ``[governor]`` section:

* has the employee been idle for ``idle_seconds``? (X11 screensaver idle time;
  a machine without a display session has no one to disturb and counts as idle)
* is it on mains power, if ``require_mains_power``? (no battery counts as mains)
* is the network unmetered? (``client.metering``: what the OS says; where it cannot
  say, the network counts as metered unless ``allow_unknown_metering``)
* is the CPU below ``max_cpu_percent``? (system-wide, sampled briefly)

Any "no" declines the round with a reason the employee sees in ``hearth status``;
the server sees only ``UNAVAILABLE``, as for every reason of the laptop's.
When it trains, it trains at low priority (``nice``) with capped threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psutil

from client.metering import Metering, network_metering
from privacy.policy import GovernorSection

NICE_INCREMENT: Final = 10
TRAINING_THREADS: Final = 1
CPU_SAMPLE_SECONDS: Final = 0.5


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


def cpu_percent() -> float:
    """System-wide CPU use, sampled over a short interval."""
    return float(psutil.cpu_percent(interval=CPU_SAMPLE_SECONDS))


@dataclass(frozen=True)
class Governor:
    """The four checks, with probes that tests can replace."""

    settings: GovernorSection
    idle: Callable[[], float] = seconds_since_last_input
    mains: Callable[[], bool] = on_mains_power
    cpu: Callable[[], float] = cpu_percent
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
        busy = self.cpu()
        if busy > self.settings.max_cpu_percent:
            return Decision(False, f"CPU busy: {busy:.0f}% (> {self.settings.max_cpu_percent:g}%)")
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


__all__ = ["Decision", "Governor", "lower_priority"]
