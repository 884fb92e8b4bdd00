"""The zygote: forked children behave as ``python -m``, end when asked, and only we may ask."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from client.deployment.task_slots import make_slots, try_acquire
from client.deployment.zygote import Zygote
from client.deployment.zygote_client import (
    ENV_ZYGOTE,
    ZygoteChild,
    ZygoteError,
    children,
    private_socket_path,
    spawn,
    start_process,
)
from tests.client.test_task_slots import free_within

PROBE = """
import os, sys, time
import numpy as np
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), flush=True)
print("random", np.random.random(), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1:2] == ["sleep"]:
    time.sleep(60)
raise SystemExit(int(sys.argv[1]) if sys.argv[1:2] and sys.argv[1].isdigit() else 0)
"""


@pytest.fixture(scope="module", name="zygote")
def _zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A zygote preloading only numpy, with a probe module on its path."""
    root = tmp_path_factory.mktemp("zy")
    (root / "mods").mkdir()
    (root / "mods" / "zygote_probe.py").write_text(PROBE)
    path = os.pathsep.join([str(root / "mods"), os.environ.get("PYTHONPATH", ""), os.getcwd()])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "client.deployment.zygote",
            "--socket-dir",
            str(root / "s"),
            "--preload",
            "numpy",
        ],
        env=env,
    )
    sock = root / "s" / "zygote.sock"
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield sock, env
    proc.terminate()
    proc.wait(timeout=15)


def _no_zombies(zygote_sock: Path) -> bool:
    zygote = next(
        p
        for p in psutil.process_iter(["cmdline"])
        if str(zygote_sock.parent) in " ".join(p.info["cmdline"] or [])
    )
    return all(c.status() != psutil.STATUS_ZOMBIE for c in zygote.children())


def test_a_child_runs_the_module_with_our_argv_env_cwd_and_output_and_its_exit_code_returns(
    zygote: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    sock, env = zygote
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        child = spawn(
            sock,
            "zygote_probe",
            ["7", "b c"],
            env={**env, "X": "y"},
            cwd=tmp_path,
            stdout=o,
            stderr=e,
        )
        assert child.wait(10) == 7
    text = out.read_text()
    assert f"argv ['7', 'b c'] cwd {tmp_path} X y" in text
    assert err.read_text() == "to stderr\n"
    assert child.poll() == 7


def test_each_child_draws_its_own_numpy_randomness_not_the_zygotes_copy(
    zygote: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    sock, env = zygote
    draws = []
    for i in range(2):
        with open(tmp_path / f"o{i}", "wb") as o:
            assert spawn(sock, "zygote_probe", [], env=env, stdout=o, stderr=o).wait(10) == 0
        draws.append(
            next(x for x in (tmp_path / f"o{i}").read_text().splitlines() if "random" in x)
        )
    assert draws[0] != draws[1]


def test_a_child_holds_the_task_slot_passed_to_it_until_it_exits(
    zygote: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    sock, env = zygote
    directory = make_slots(tmp_path / "slots", 1)
    slot = try_acquire(directory)
    assert slot is not None
    child = spawn(sock, "zygote_probe", ["sleep"], env=env, keep=(slot.fd,))
    slot.close()  # the requester's copy; the zygote closed its own after the fork
    assert not free_within(directory, 0.5)
    child.kill()
    child.wait(10)
    assert free_within(directory, 5)


def test_terminate_kill_and_a_vanished_requester_end_children_and_leave_no_zombie(
    zygote: tuple[Path, dict[str, str]],
) -> None:
    sock, env = zygote
    quiet = os.open(os.devnull, os.O_WRONLY)
    try:
        a, b, c = (
            spawn(sock, "zygote_probe", ["sleep"], env=env, stdout=quiet, stderr=quiet)
            for _ in range(3)
        )
        time.sleep(0.3)
        assert a.poll() is None
        assert {ch.pid for ch in children(sock)} >= {a.pid, b.pid, c.pid}
        a.terminate()
        assert a.wait(10) == -signal.SIGTERM
        b.kill()
        assert b.wait(10) == -signal.SIGKILL
        c._sock.close()  # the requester went away without a word
        deadline = time.monotonic() + 10
        while psutil.pid_exists(c.pid) and psutil.Process(c.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        assert not psutil.pid_exists(c.pid)  # reaped too
        assert _no_zombies(sock)
        with pytest.raises(subprocess.TimeoutExpired):
            spawn(sock, "zygote_probe", ["sleep"], env=env, stdout=quiet, stderr=quiet).wait(0.1)
    finally:
        os.close(quiet)


def test_the_socket_is_private_and_a_shared_directory_is_refused(
    zygote: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    sock, _ = zygote
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(ZygoteError, match="0700"):
        private_socket_path(shared)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_another_local_user_cannot_reach_the_socket(zygote: tuple[Path, dict[str, str]]) -> None:
    sock, _ = zygote
    pid = os.fork()
    if pid == 0:  # become "nobody" and try to connect
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.connect(str(sock))
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "another user could connect"


def test_a_request_that_would_run_other_code_is_refused(
    zygote: tuple[Path, dict[str, str]],
) -> None:
    sock, env = zygote
    with pytest.raises(ZygoteError, match="PYTHONPATH"):
        spawn(sock, "zygote_probe", [], env={**env, "PYTHONPATH": "/elsewhere"})


def test_the_zygote_will_not_fork_with_a_second_thread(tmp_path: Path) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        request = {"executable": sys.executable, "module": "m", "env": dict(os.environ)}
        assert "thread" in str(Zygote(tmp_path / "z.sock")._check(request, [0, 1, 2]))
    finally:
        stop.set()
        thread.join()


def test_without_hearth_zygote_processes_start_fresh_as_on_a_laptop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV_ZYGOTE, raising=False)
    child = start_process([sys.executable, "-c", "raise SystemExit(3)"])
    assert isinstance(child, subprocess.Popen)
    assert child.wait(10) == 3
    monkeypatch.setenv(ENV_ZYGOTE, str(tmp_path / "z.sock"))
    with pytest.raises(ZygoteError, match="-m MODULE"):
        start_process([sys.executable, "-c", "pass"])
    with pytest.raises(ZygoteError, match="no zygote"):
        start_process([sys.executable, "-m", "json.tool"])
    assert not isinstance(child, ZygoteChild)


def test_a_zygote_told_to_exit_with_its_parent_stops_when_orphaned(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    zygote = [sys.executable, "-m", "client.deployment.zygote", "--socket-dir", str(directory)]
    zygote += ["--preload", "json", "--exit-with-parent"]
    # The shell starts the zygote, sees its socket, and exits: the zygote is orphaned.
    script = f"{' '.join(zygote)} & while [ ! -S {directory}/zygote.sock ]; do sleep 0.05; done"
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    deadline = time.monotonic() + 10
    while (directory / "zygote.sock").exists():
        assert time.monotonic() < deadline, "an orphaned zygote kept serving"
        time.sleep(0.05)
