"""Run the hearth Flower app with ``flwr run .`` on the local simulation federation.

``flwr run`` starts a managed local SuperLink in the background on a fixed port
and leaves it running. hearth gives each run its own ``FLWR_HOME`` and stops the
SuperLink it started when the run ends, so demos and tests leave nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

LOCAL_SUPERLINK_PORT = 39091
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FlwrRun:
    """The outcome of one ``flwr run``."""

    returncode: int
    log_file: Path
    seconds: float


def _format_value(value: object) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_config_arg(values: Mapping[str, object]) -> str:
    """Format overrides for ``--run-config`` (strings quoted, as TOML wants)."""
    return " ".join(f"{key}={_format_value(value)}" for key, value in values.items())


def _superlink_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(part.endswith("flower-superlink") for part in cmdline[:2]) and any(
            str(LOCAL_SUPERLINK_PORT) == part for part in cmdline
        ):
            found.append(proc)
    return found


def stop_local_superlink() -> None:
    """Stop the managed local SuperLink (and its simulation children)."""
    for proc in _superlink_processes():
        children = proc.children(recursive=True)
        for p in [proc, *children]:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs([proc, *children], timeout=10)
        for p in alive:
            p.kill()


def run_app(
    *,
    num_supernodes: int,
    run_config: Mapping[str, object],
    flwr_home: Path,
    log_file: Path,
    on_poll: Callable[[], None] | None = None,
    timeout: float = 3600.0,
) -> FlwrRun:
    """Run ``flwr run . --stream`` and wait for it, logging Flower's output to a file."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_DEDUP_LOGS": "0",
    }
    started_here = not _superlink_processes()
    command = [
        str(bin_dir / "flwr"),
        "run",
        str(PROJECT_ROOT),
        "--stream",
        "--federation-config",
        f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
        "--run-config",
        run_config_arg(run_config),
    ]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                if on_poll is not None:
                    on_poll()
                if time.perf_counter() - start > timeout:
                    proc.kill()
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
            if started_here:
                stop_local_superlink()
    if on_poll is not None:
        on_poll()
    return FlwrRun(proc.wait(), log_file, time.perf_counter() - start)
