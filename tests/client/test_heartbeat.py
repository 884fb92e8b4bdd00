"""The heartbeat's memory figure is the recorder's own, not its parent's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from client.control.heartbeat import own_peak_rss_mb

PARENT_MB = 300


@pytest.mark.skipif(sys.platform != "linux", reason="VmHWM is Linux's")
def test_a_process_started_by_a_large_one_reports_its_own_peak():
    # getrusage's ru_maxrss in the child would say ~PARENT_MB: Linux carries the
    # high-water mark of the image a process was exec'd from.
    parent = textwrap.dedent(
        f"""
        import subprocess, sys
        ballast = bytearray({PARENT_MB} * 2**20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        child = "from client.control.heartbeat import own_peak_rss_mb; print(own_peak_rss_mb())"
        print(subprocess.run([sys.executable, "-c", child], capture_output=True,
                             text=True, check=True).stdout)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, check=True, timeout=60
    )
    peak = float(out.stdout.strip())
    assert 5 < peak < PARENT_MB / 3


def test_the_figure_is_read_from_the_kernels_high_water_mark(tmp_path: Path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 1 kB\n")
    assert own_peak_rss_mb(status) == 50.0


def test_without_proc_it_falls_back_to_getrusage(tmp_path: Path):
    peak = own_peak_rss_mb(tmp_path / "missing")
    assert peak is not None and peak > 5
