"""README's "Real deployment" walk-through as one command, on 127.0.0.1 (`make deploy-demo`).

Every step runs the command a person would type, prints it, and shows what it
answered: the PKI with the org key kept apart, two laptops with their own homes
(the three files each receives, synthetic work from ``hearth-sim seed-device``,
a first ``hearth join`` that pins the signed tester policy and stops for consent,
``hearth consent grant``, then ``hearth join`` for good), a signed bundle,
``hearth-server campaign run`` of a SecAgg+ campaign, then ``hearth-privacy
audit`` of its checkpoints. Everything it starts is stopped by its process group.

The keys and passphrases here are throwaway ones for synthetic laptops.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from simulations.flwr_runner import PROJECT_ROOT, free_port

BIN: Final = Path(sys.executable).parent
DEMO_MARK: Final = ".hearth-deploy-demo"
ORG_KEY_PASSPHRASE: Final = "deploy demo org key passphrase"  # noqa: S105 - throwaway key
LAPTOP_PASSPHRASE: Final = "deploy demo synthetic laptop"  # noqa: S105 - synthetic vaults
LAPTOPS: Final = ("alice-laptop", "bob-laptop")
MODALITIES: Final = "pointer,keys,apps"


class DeployDemoError(Exception):
    """A step of the walk-through failed; the message names it and what it printed."""


@dataclass(frozen=True)
class DeployDemoSettings:
    """Where the demo keeps its state and how long its campaign is."""

    root: Path
    rounds: int = 3
    hours: float = 1.0  # of synthetic work per laptop
    round_timeout: float = 120.0


@dataclass
class DeployDemoResult:
    """What the ML engineer saw, step by step, and how long it took."""

    campaign_exit: int = -1
    campaign: str = ""
    audit: str = ""
    data_summary: str = ""
    seconds: float = 0.0
    checkpoints: Path = field(default_factory=Path)


@dataclass
class _Walkthrough:
    settings: DeployDemoSettings
    say: Callable[[str], None]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.settings.root

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(PROJECT_ROOT),  # this checkout, wherever the venv points
            "HEARTH_KEYRING": "0",
            "HEARTH_ORG_KEY_PASSPHRASE": ORG_KEY_PASSPHRASE,
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            **extra,
        }

    def show(self, command: Sequence[str], home: Path | None = None) -> None:
        shown = shlex.join(command).replace(str(self.root), "$DEMO")
        shown = shown.replace(str(PROJECT_ROOT), ".").replace(f"{BIN}{os.sep}", "")
        prefix = f"HEARTH_HOME={str(home).replace(str(self.root), '$DEMO')} " if home else ""
        self.say(f"$ {prefix}{shown}")

    def run(
        self,
        command: list[str],
        home: Path | None = None,
        *,
        expect_ok: bool = True,
        timeout: float = 300.0,
        quiet: bool = False,
    ) -> str:
        self.show(command, home)
        extra = {"HEARTH_HOME": str(home), "HEARTH_PASSPHRASE": LAPTOP_PASSPHRASE} if home else {}
        done = subprocess.run(
            command,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )
        output = (done.stdout + done.stderr).rstrip()
        if expect_ok and done.returncode != 0:
            raise DeployDemoError(f"`{shlex.join(command)}` failed:\n{output}")
        if not quiet:
            for line in output.splitlines():
                self.say(f"  {line}")
        return output

    def start(self, command: list[str], log: Path, home: Path | None = None) -> None:
        self.show(command, home)
        self.say(f"  (in the background; its log: {str(log).replace(str(self.root), '$DEMO')})")
        extra = {"HEARTH_HOME": str(home), "HEARTH_PASSPHRASE": LAPTOP_PASSPHRASE} if home else {}
        with open(log, "ab") as handle:
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=self.env(**extra),
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.root,
                )
            )

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)  # the group started for it
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _wait_for(log: Path, text: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
    raise DeployDemoError(f"timed out after {timeout:g}s waiting for {what}; {log}:\n{tail}")


def fresh_root(root: Path) -> Path:
    """An empty demo directory; only a directory an earlier demo made is ever removed."""
    root = root.resolve()
    if root.exists():
        if not (root / DEMO_MARK).is_file():
            raise DeployDemoError(f"{root} exists and is not a deploy demo's: choose another root")
        shutil.rmtree(root)
    root.mkdir(parents=True, mode=0o700)
    (root / DEMO_MARK).write_text("made by hearth-sim deploy-demo\n")
    return root


def run_deploy_demo(settings: DeployDemoSettings, say: Callable[[str], None]) -> DeployDemoResult:
    """Walk through README's deployment on 127.0.0.1 and return what the ML engineer saw."""
    started = time.perf_counter()
    settings = DeployDemoSettings(
        fresh_root(settings.root), settings.rounds, settings.hours, settings.round_timeout
    )
    demo = _Walkthrough(settings, say)
    result = DeployDemoResult(checkpoints=settings.root / "checkpoints")
    say(f"DEMO={settings.root}")
    try:
        with _federation(demo) as token:
            result.data_summary = demo.run(
                [str(BIN / "hearth"), "data", "summary"], settings.root / LAPTOPS[0]
            )
            say("# The ML team runs the campaign on the SuperLink host and waits for its end:")
            result.campaign_exit, result.campaign = _campaign(demo, token, result.checkpoints)
        if result.campaign_exit == 0:
            say("# The privacy team audits what the campaign spent:")
            result.audit = demo.run([str(BIN / "hearth-privacy"), "audit", str(result.checkpoints)])
    finally:
        result.seconds = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _federation(demo: _Walkthrough) -> Iterator[str]:
    """PKI, signed policy and bundle, ``hearth-server up``, two joined laptops; yields the token."""
    root = demo.root
    server = str(BIN / "hearth-server")
    offline = root / "offline"
    org_key = offline / "org-signing.key"
    demo.say("# On the machine that holds the org key (offline in a real deployment):")
    demo.run([server, "pki", "init", str(root / "pki"), "--org-key-dir", str(offline)])
    for name in LAPTOPS:
        demo.run([server, "pki", "add-device", name, "--pki", str(root / "pki")])
    policy = root / "tester_policy.toml"
    shutil.copyfile(PROJECT_ROOT / "privacy" / "tester_policy.toml", policy)
    demo.run([server, "sign-policy", str(policy), "--key", str(org_key)])
    fab = root / "dist" / "hearth.fab"
    sign = [server, "sign", str(PROJECT_ROOT), "--version", "1", "--key", str(org_key)]
    demo.run([*sign, "--out", str(fab)])
    demo.say("  (the org key and its passphrase stay here; pki/ goes to the SuperLink host)")
    token = fab.with_name(fab.name + ".sig").read_text().strip()
    demo.say("# On the SuperLink host (pki/ without the org key):")
    port, control = free_port(), free_port()
    up_log = root / "up.log"
    try:
        up = [server, "up", "--pki", str(root / "pki"), "--state", str(root / "superlink")]
        demo.start([*up, "--port", str(port), "--control-port", str(control)], up_log)
        # The laptops get ready while the SuperLink starts: each in its own thread, its
        # steps shown together once done (a real laptop does them on its own).
        shown: dict[str, list[str]] = {name: [] for name in LAPTOPS}
        with ThreadPoolExecutor(len(LAPTOPS)) as pool:
            ready = [
                pool.submit(_laptop, replace(demo, say=shown[name].append), i, name, port)
                for i, name in enumerate(LAPTOPS)
            ]
            _wait_for(up_log, "Devices join with", 120, "hearth-server up")
            for line in up_log.read_text().splitlines():
                if line.startswith("device "):
                    demo.say(f"  {line}")
            for name, future in zip(LAPTOPS, ready, strict=True):
                try:
                    future.result()
                finally:
                    for line in shown[name]:
                        demo.say(line)
        for name in LAPTOPS:
            _wait_for(root / f"join-{name}.log", "SuperNode ID", 120, f"{name} to connect")
        demo.say("  both laptops are connected")
        yield token
    finally:
        demo.stop()


def _laptop(demo: _Walkthrough, employee: int, name: str, port: int) -> None:
    """Files to the laptop, synthetic work, pin policy, consent, join (in the background)."""
    root = demo.root
    files = root / f"{name}-files"  # what is copied to the laptop, and nothing else
    files.mkdir()
    pki = root / "pki"
    for source in (pki / "ca.crt", pki / "devices" / f"{name}.key", pki / "org-signing.pub"):
        shutil.copy2(source, files / source.name)
    for source in (root / "tester_policy.toml", root / "tester_policy.toml.sig"):
        shutil.copy2(source, files / source.name)
    demo.say(f"# On {name}: it received {', '.join(sorted(p.name for p in files.iterdir()))}")
    home = root / name
    seed = [str(BIN / "hearth-sim"), "seed-device", str(home), "--employee", str(employee)]
    demo.run([*seed, "--hours", f"{demo.settings.hours:g}"], home)
    join = [
        str(BIN / "hearth"),
        "join",
        "--superlink",
        f"127.0.0.1:{port}",
        "--root-cert",
        str(files / "ca.crt"),
        "--key",
        str(files / f"{name}.key"),
        "--org-key",
        str(files / "org-signing.pub"),
        "--policy",
        str(files / "tester_policy.toml"),
        "--policy-signature",
        str(files / "tester_policy.toml.sig"),
    ]
    demo.say("# the first join pins the org key and the signed policy, then waits for consent:")
    demo.run(join, home, expect_ok=False)
    demo.run([str(BIN / "hearth"), "consent", "grant", "--modalities", MODALITIES, "--yes"], home)
    _wait_for(root / "up.log", "Devices join with", 180, "hearth-server up")
    demo.start(join, root / f"join-{name}.log", home)


def _campaign(demo: _Walkthrough, token: str, checkpoints: Path) -> tuple[int, str]:
    """``hearth-server campaign run`` with its output shown live; (exit status, output)."""
    settings = demo.settings
    run_config = " ".join(
        [
            f"num-server-rounds={settings.rounds}",
            "secaggplus=true",
            "secaggplus-num-shares=3",
            "secaggplus-reconstruction-threshold=2",
            f"policy-file='{demo.root / 'tester_policy.toml'}'",
            f"round-timeout={settings.round_timeout}",
            f"bundle-signature='{token}'",
        ]
    )
    command = [
        str(BIN / "hearth-server"),
        "campaign",
        "run",
        str(PROJECT_ROOT),
        "--state",
        str(demo.root / "superlink"),
        "--checkpoint-dir",
        str(checkpoints),
        "--run-config",
        run_config,
    ]
    demo.show([part.replace(token, "TOKEN") for part in command])
    proc = subprocess.Popen(
        command,
        env=demo.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=demo.root,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        demo.say(f"  {line.rstrip()}")
    return proc.wait(), "\n".join(lines)


__all__ = [
    "DeployDemoError",
    "DeployDemoResult",
    "DeployDemoSettings",
    "fresh_root",
    "run_deploy_demo",
]
