"""A Ray cluster of several nodes on this machine, for the multi-node test and benchmarks.

Every node is a ``ray start --block`` process of its own (``--head`` for the first, the
others join its address), so the cluster has the shape of one spread over machines:
separate raylets, object stores and workers, one GCS. ``--block`` keeps each node's
processes children of the process this module started, so stopping the cluster ends
exactly those trees; ``ray stop`` would end every Ray process on the machine, other
engineers' simulations included.

The head gets a temporary directory of its own: ``ray.init()`` without an address joins
the newest cluster recorded in Ray's default temporary directory, and a shared machine's
other simulations must not find this one there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from simulations.flwr_runner import free_port

HEAD_RESOURCE = "node:__internal_head__"
# Ray's floor for a node's object store; a simulated device's messages are kilobytes.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class RayNode:
    """One node as the cluster's GCS lists it."""

    node_id: str
    alive: bool
    is_head: bool
    cpus: float


@dataclass(frozen=True)
class ClientActor:
    """Where one of Flower's ClientApp actors ran."""

    node_id: str
    pid: int
    state: str


@dataclass
class LocalRayCluster:
    """A head and workers on 127.0.0.1, each its own ``ray start --block`` process."""

    head_cpus: float = 0
    worker_cpus: tuple[float, ...] = (1,)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hr-")))
    port: int = field(default_factory=free_port)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        """What ``RAY_ADDRESS`` (or ``ray start --address``) needs to join this cluster."""
        return f"127.0.0.1:{self.port}"

    def _ray_start(self, args: list[str], cpus: float, log_name: str) -> None:
        ray = Path(sys.executable).parent / "ray"
        command = [
            str(ray),
            "start",
            "--block",
            f"--num-cpus={cpus:g}",
            "--num-gpus=0",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
            *args,
        ]
        log = open(self.temp_dir / log_name, "wb")  # noqa: SIM115 (the node's lifetime)
        env = {**os.environ, "RAY_ADDRESS": ""}
        self._procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))

    def start(self) -> None:
        """Start the head, wait for its GCS, then the workers, and wait for every node."""
        self._ray_start(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
            ],
            self.head_cpus,
            "head.log",
        )
        self._wait(lambda: _listening(self.port), "the head's GCS")
        for index, cpus in enumerate(self.worker_cpus):
            self._ray_start(
                [
                    f"--address={self.address}",
                    "--node-ip-address=127.0.0.1",
                    f"--dashboard-agent-listen-port={free_port()}",
                ],
                cpus,
                f"worker-{index}.log",
            )
        expected = 1 + len(self.worker_cpus)
        self._wait(
            lambda: sum(n.alive for n in self.nodes()) == expected,
            f"{expected} nodes",
        )

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"a Ray node exited while waiting for {what}; see {self.temp_dir}"
                )
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"Ray cluster: no {what} after {START_TIMEOUT:.0f}s; see {self.temp_dir}"
        )

    def nodes(self) -> list[RayNode]:
        """The nodes the GCS knows, asked from a separate driver process."""
        return [RayNode(**n) for n in self._query("nodes")]

    def client_actors(self) -> list[ClientActor]:
        """Every ClientApp actor Flower created on this cluster, alive or finished."""
        return [ClientActor(**a) for a in self._query("actors")]

    def _query(self, what: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "simulations.ray_cluster", what, self.address],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "RAY_ADDRESS": ""},
            cwd=Path(__file__).resolve().parents[1],
        )
        if out.returncode != 0:
            return []
        rows: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
        return rows

    def stop(self) -> None:
        """End every process of this cluster's nodes (and only those), then its files."""
        trees: list[psutil.Process] = []
        for proc in reversed(self._procs):  # workers first, the head last
            try:
                root = psutil.Process(proc.pid)
                trees += [*root.children(recursive=True), root]
            except psutil.NoSuchProcess:
                continue
        for p in trees:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(trees, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                continue
        for proc in self._procs:
            proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _print_state(what: str, address: str) -> None:
    """Print the cluster's nodes or Flower's ClientApp actors as one JSON line."""
    import ray  # noqa: PLC0415 (only this driver process needs Ray)
    from ray._private import state  # noqa: PLC0415

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if what == "nodes":
            rows: list[dict[str, Any]] = [
                {
                    "node_id": n["NodeID"],
                    "alive": bool(n["Alive"]),
                    "is_head": HEAD_RESOURCE in n["Resources"],
                    "cpus": float(n["Resources"].get("CPU", 0)),
                }
                for n in ray.nodes()  # type: ignore[no-untyped-call]
            ]
        else:
            # The GCS actor table (a developer API) keeps finished actors and where
            # they ran; the state API would need Ray's dashboard, not installed here.
            rows = [
                {"node_id": a["Address"]["NodeID"], "pid": a["Pid"], "state": a["State"]}
                for a in state.actors().values()
                if a["ActorClassName"] == "ClientAppActor"
            ]
    finally:
        ray.shutdown()
    print(json.dumps(rows))


if __name__ == "__main__":
    _print_state(sys.argv[1], sys.argv[2])
