"""The governor's CPU check counts only other programs, and fails closed when it cannot measure."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import namedtuple

import psutil
import pytest

from client.deployment.governor import Governor, hearth_processes, others_cpu_percent
from client.deployment.metering import Metering
from privacy.policy import GovernorSection

CpuTimes = namedtuple("CpuTimes", "user system")


class FakeProcess:
    """A process whose CPU seconds grow by ``per_sample`` between two readings."""

    def __init__(self, pid: int, per_sample: float) -> None:
        self.pid = pid
        self.per_sample = per_sample
        self.readings = 0

    def cpu_times(self):
        seconds = self.readings * self.per_sample
        self.readings += 1
        return CpuTimes(seconds, 0.0)


def _machine(samples):
    it = iter(samples)
    return lambda: next(it)


def test_hearths_own_cpu_is_not_counted_against_it():
    # Two CPUs, one second: the machine was 1.6 CPU-seconds busy, 1.2 of them hearth's.
    own = [FakeProcess(1, 0.8), FakeProcess(2, 0.4)]
    machine = _machine([(100.0, 1000.0), (101.6, 1002.0)])
    percent = others_cpu_percent(1.0, own=lambda: own, machine=machine, sleep=lambda _: None)
    assert percent == pytest.approx(20.0)  # 0.4 of 2 CPU-seconds


def test_a_cpu_that_cannot_be_measured_is_unknown():
    def denied():
        raise psutil.AccessDenied(1)

    assert others_cpu_percent(0.0, own=denied, sleep=lambda _: None) is None


def _governor(cpu, max_cpu=30.0):
    settings = GovernorSection(
        idle_seconds=0,
        max_cpu_percent=max_cpu,
        require_mains_power=False,
        allow_unknown_metering=True,
    )
    return Governor(settings, cpu=lambda: cpu, metering=lambda: Metering.UNKNOWN)


def test_unknown_cpu_declines_unless_the_policy_asks_nothing_of_the_cpu():
    decision = _governor(None).decide()
    assert not decision.allowed
    assert "unknown" in decision.reason
    assert _governor(None, max_cpu=100.0).decide().allowed


def test_other_programs_busy_declines_with_the_figure():
    decision = _governor(42.0).decide()
    assert decision.reason == "CPU busy with other programs: 42% (> 30%)"


def test_the_supernode_and_everything_under_it_are_hearths():
    # A stand-in SuperNode (its command line names flower-supernode) with a child.
    code = "# flower-supernode\nimport subprocess; subprocess.run(['sleep', '30'])"
    supernode = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(supernode.pid).children() and time.monotonic() < deadline:
            time.sleep(0.02)
        [child] = psutil.Process(supernode.pid).children()
        pids = {p.pid for p in hearth_processes(child)}
        assert pids == {supernode.pid, child.pid}  # not this test process, its parent
        assert {p.pid for p in hearth_processes()} >= {psutil.Process().pid, supernode.pid}
    finally:
        supernode.kill()
        supernode.wait()
