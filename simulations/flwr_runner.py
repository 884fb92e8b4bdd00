"""Run the hearth Flower app with ``flwr run .`` on the local simulation federation.

``flwr run`` starts a managed local SuperLink in the background and leaves it
running. hearth gives each run its own ``FLWR_HOME`` and its own free ports
(through Flower's ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` and
``FLWR_LOCAL_CONTROL_API_PORT``), and stops exactly that SuperLink when the run
ends, so runs never share a SuperLink and leave nothing behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Flower's CLI gives the managed local SuperLink a fixed 15 s to start; on a shared
# 2-core machine under load it took longer (its log showed it up at 18 s) and the run
# failed. The runner starts Flower's own CLI with that one constant raised.
SUPERLINK_STARTUP_SECONDS = 180.0
_FLWR_CLI = (
    "import sys\n"
    "import flwr.cli.local_superlink as local\n"
    f"local.LOCAL_SUPERLINK_STARTUP_TIMEOUT = {SUPERLINK_STARTUP_SECONDS}\n"
    "from flwr.cli.app import app\n"
    "sys.argv[0] = 'flwr'\n"
    "sys.exit(app())\n"
)
# Extra ClientApp actors beyond the CPUs, on a machine of its own (no ``ray_address``).
# Flower's Ray backend starts one actor per ``client-resources-num-cpus`` of the CPUs
# Ray is told of, and each engine worker thread hands its actor the next message only
# after the last reply came back; with one actor a core, a core sits idle while its
# actor waits on that hand-off, the ledger's fsyncs and the ServerApp's serial work.
# An actor trains single-threaded (``client.learning.threads``), so a spare one keeps
# both cores busy at the cost of one more worker process's memory.
SPARE_ACTORS = 1


def local_actors(cpus: int | None = None) -> int:
    """ClientApp actors for a simulation on this machine: one a CPU, plus the spares."""
    return max(1, cpus if cpus is not None else os.cpu_count() or 1) + SPARE_ACTORS


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _superlink_processes(port: int | None = None) -> list[psutil.Process]:
    """Managed local SuperLinks (on ``port`` only, when given)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if not any(part.endswith("flower-superlink") for part in cmdline[:2]):
            continue
        if "--simulation" in cmdline and (port is None or str(port) in cmdline):
            found.append(proc)
    return found


def stop_local_superlink(port: int) -> None:
    """Stop the managed local SuperLink on ``port`` (and its simulation children)."""
    for proc in _superlink_processes(port):
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
    ray_address: str | None = None,
    actors: int | None = None,
) -> FlwrRun:
    """Run ``flwr run . --stream`` and wait for it, logging Flower's output to a file.

    ``ray_address`` (host:port of a running Ray cluster's head) makes the simulation
    engine join that cluster instead of starting Ray on this machine: Flower's Ray
    backend calls ``ray.init()``, which reads ``RAY_ADDRESS``, and the managed
    SuperLink this run starts passes its environment down to the engine.

    ``actors`` ClientApp workers run on this machine (default ``local_actors()``): Ray
    is told of that many CPUs and each actor asks for one. On a cluster Ray counts
    the CPUs itself, one actor each.
    """
    bin_dir = Path(sys.executable).parent
    port = free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # The managed SuperLink would otherwise `uv sync` the app's dependencies into a
        # fresh environment per run: minutes of downloads, and a CUDA build of torch.
        # The app runs in this virtualenv, which already has them.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_DEDUP_LOGS": "0",
    }
    federation = f"num-supernodes={num_supernodes} client-resources-num-cpus=1"
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address
    else:
        federation += f" init-args-num-cpus={actors or local_actors()}"
    command = [
        sys.executable,
        "-c",
        _FLWR_CLI,
        "run",
        str(PROJECT_ROOT),
        "--stream",
        "--federation-config",
        federation,
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
            stop_local_superlink(port)
    if on_poll is not None:
        on_poll()
    return FlwrRun(proc.wait(), log_file, time.perf_counter() - start)
