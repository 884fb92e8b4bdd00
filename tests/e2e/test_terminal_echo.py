"""Password prompts in a real xterm (and tmux inside it): echo off means nothing is kept.

A small program in the terminal reads a password the way sudo does (``getpass``:
ECHO off, ICANON on), then an ordinary line; another puts the terminal in raw
mode, as an editor does. The recorder must keep only a gap for the first, and
record the others normally. The prompt tests run again with three busy loops
on the machine: input read late must still be judged by when it was typed (a
recorder that judged keys when it read them kept 4 digits of a password typed
in tmux, 1 run in 6), and keys must stay in order with clicks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.control.consent import grant
from policy.events import Click, KeyClass, KeyRun, Modality, Suppressed, Text

pytestmark = pytest.mark.e2e

CANARY = "ZQXCANARY7781"
DIGITS = "4815162342"  # a password of digits: any digit run in the vault is a leak

PROMPT = """
import getpass, pathlib, sys
out = pathlib.Path(sys.argv[1])
out.write_text("ready")
secret = getpass.getpass("Password: ")
out.write_text(f"got {len(secret)}")
line = input("next: ")
out.write_text(f"done {len(secret)} {len(line)}")
input()
"""

RAW = """
import pathlib, sys, tty
out = pathlib.Path(sys.argv[1])
tty.setraw(0)  # what an editor does: no echo, no line mode
out.write_text("ready")
data = sys.stdin.read(5)
out.write_text(f"done {len(data)}")
sys.stdin.read(1)
"""


def _wait_for(path: Path, prefix: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.startswith(prefix):
            return text
        time.sleep(0.05)
    raise AssertionError(f"the terminal program did not reach {prefix!r}: {text!r}")


@pytest.fixture
def terminal(xdisplay: str, tmp_path: Path) -> Iterator:
    if not shutil.which("xterm"):
        pytest.skip("xterm is not installed (make sysdeps)")
    processes: list[subprocess.Popen[bytes]] = []

    def open_terminal(program: str, tmux: bool = False) -> tuple[str, Path]:
        script = tmp_path / f"program{len(processes)}.py"
        script.write_text(program)
        out = tmp_path / f"out{len(processes)}"
        argv = [sys.executable, str(script), str(out)]
        if tmux:
            if not shutil.which("tmux"):
                pytest.skip("tmux is not installed (make sysdeps)")
            socket = f"hearth-test-{id(tmp_path):x}"
            argv = ["tmux", "-L", socket, "-f", "/dev/null", "new-session", *argv]
        title = f"hearth-term-{id(out):x}"  # neutral: a title saying "password" is a prompt
        processes.append(subprocess.Popen(["xterm", "-T", title, "-e", *argv]))
        _wait_for(out, "ready")
        found = subprocess.run(
            ["xdotool", "search", "--sync", "--name", title],
            check=True,
            capture_output=True,
            text=True,
            timeout=20,
        )
        return found.stdout.split()[0], out

    yield open_terminal
    for process in processes:
        process.terminate()
        process.wait(5)
    subprocess.run(
        ["tmux", "-L", f"hearth-test-{id(tmp_path):x}", "kill-server"],
        check=False,
        capture_output=True,
    )


def _letters_and_digits(events) -> tuple[int, int]:
    runs = [e for e in events if isinstance(e, KeyRun)]
    letters = sum(e.count for e in runs if e.key_class is KeyClass.LETTER)
    digits = sum(e.count for e in runs if e.key_class is KeyClass.DIGIT)
    return letters, digits


@pytest.fixture
def busy() -> Iterator[None]:
    """Three busy loops for the test's length: the recorder's threads wait for the CPU."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait(5)


def _answer_prompt(kit, hearth_home, terminal, tmux: bool, grants: tuple, secret: str):
    """Start a recorder, type ``secret`` at the terminal's echo-off prompt, then "hello"."""
    grant(hearth_home, grants)
    window, out = terminal(PROMPT, tmux=tmux)
    recorder = kit.start_recorder(hearth_home)
    kit.activate(window)
    time.sleep(0.3)
    kit.xdotool("type", "--delay", "20", secret)
    kit.xdotool("key", "Return")
    _wait_for(out, "got ")
    # Keys are judged by the look before them too: let an idle look (every 0.5 s)
    # see the prompt gone first.
    time.sleep(0.8)
    kit.xdotool("type", "--delay", "20", "hello")
    return window, out, recorder


def _type_password_then_a_line(kit, hearth_home, terminal, tmux: bool) -> list:
    grants = (Modality.KEYS, Modality.APPS, Modality.TEXT)
    _, out, recorder = _answer_prompt(kit, hearth_home, terminal, tmux, grants, CANARY)
    kit.xdotool("key", "Return")
    assert _wait_for(out, "done") == f"done {len(CANARY)} 5"
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    assert _letters_and_digits(events) == (5, 0), events  # "hello"; nothing of the password
    texts = "".join(e.text for e in events if isinstance(e, Text))
    assert texts == "hello\n"
    gaps = [e for e in events if isinstance(e, Suppressed) and e.reason == "password_prompt"]
    assert gaps and all(g.duration > 0 for g in gaps)
    disk = kit.raw_bytes_under(hearth_home)
    assert CANARY.encode() not in disk and CANARY.lower().encode() not in disk
    return events


def _password_under_load(kit, hearth_home, terminal, tmux: bool) -> None:
    grants = (Modality.KEYS, Modality.APPS, Modality.POINTER)
    window, out, recorder = _answer_prompt(kit, hearth_home, terminal, tmux, grants, DIGITS)
    kit.xdotool("mousemove", "--window", window, "40", "40")
    kit.xdotool("click", "1")
    kit.xdotool("type", "--delay", "20", "ab")
    kit.xdotool("key", "Return")
    assert _wait_for(out, "done") == f"done {len(DIGITS)} 7"
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    assert _letters_and_digits(events) == (7, 0), events  # nothing of the password
    typed = [
        (e.key_class.value, e.count) if isinstance(e, KeyRun) else "click"
        for e in events
        if (isinstance(e, KeyRun) and e.key_class is KeyClass.LETTER) or isinstance(e, Click)
    ]
    assert typed[-3:] == [("letter", 5), "click", ("letter", 2)], typed  # in typing order


def test_a_password_typed_at_an_echo_off_prompt_in_xterm_leaves_only_a_gap(
    hearth_home, kit, terminal
):
    _type_password_then_a_line(kit, hearth_home, terminal, tmux=False)


def test_the_same_prompt_inside_tmux_leaves_only_a_gap(hearth_home, kit, terminal):
    _type_password_then_a_line(kit, hearth_home, terminal, tmux=True)


def test_under_load_a_password_in_xterm_leaves_nothing_and_keys_keep_order_with_clicks(
    hearth_home, kit, terminal, busy
):
    _password_under_load(kit, hearth_home, terminal, tmux=False)


def test_under_load_a_password_inside_tmux_leaves_nothing(hearth_home, kit, terminal, busy):
    _password_under_load(kit, hearth_home, terminal, tmux=True)


def test_a_raw_mode_program_like_an_editor_is_recorded_normally(hearth_home, kit, terminal):
    grant(hearth_home, (Modality.KEYS, Modality.APPS))
    window, out = terminal(RAW)
    recorder = kit.start_recorder(hearth_home)
    kit.activate(window)
    time.sleep(0.3)
    kit.xdotool("type", "--delay", "20", "abcde")
    assert _wait_for(out, "done") == "done 5"
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    assert _letters_and_digits(events) == (5, 0)
    assert not any(isinstance(e, Suppressed) and e.reason == "password_prompt" for e in events)
