"""Password prompts in terminals, seen the way the terminal sees them: echo off (Linux).

A program asking for a password (``sudo``, ``ssh-add``, ``passwd``, ``read -s``)
turns the terminal's ECHO flag off and leaves it in canonical (line) mode. A
full-screen program (vim, less, tmux, ssh's own session) turns ICANON off as
well: raw mode, recorded normally. So while a terminal window is in front:

1. its process id comes from ``_NET_WM_PID`` (the focus backend reads it);
2. its pseudo-terminals are the controlling ttys of its descendants, found through
   ``/proc/<pid>/task/<tid>/children`` and field 7 of ``/proc/<pid>/stat``; a tmux
   client among them adds the ttys of every pane of the tmux servers the user runs;
3. each tty's foreground process group (field 8) must exist, and its flags are read
   with ``tcgetattr`` on ``/dev/pts/N`` opened ``O_NOCTTY | O_NONBLOCK`` (never
   becoming its controlling terminal) and closed at once (an fd kept open would
   keep a closed tab's pty alive);
4. ECHO off with ICANON on, on any of them, is a password prompt: the recorder
   keeps nothing typed, not even key classes, only a gap. Which tab of a terminal
   is shown is not visible from outside, so any tab prompting counts (fail closed).

The tty list is rescanned every ``rescan`` seconds or when the window changes,
with raw ``os`` reads of /proc (with tmux in front every process's name is read:
about 1 ms of CPU for 140 processes, a fifth of what ``pathlib`` cost); the flags
are read at every look (three syscalls a tty).

What cannot be seen: a prompt on a remote host inside ssh (the local tty is in raw
mode; the remote one is out of reach); terminals that are not the parent of their
shells' processes, or that run every window in one server process (gnome-terminal:
every window's ttys count, so a prompt in one suppresses all); Wayland clients and
Flatpak terminals without ``_NET_WM_PID`` or with processes in another pid
namespace. On macOS the focus backend uses the system's secure event input instead
(password fields and Terminal's Secure Keyboard Entry turn it on); Windows exposes
neither, so there only password-prompt windows are detected.
"""

from __future__ import annotations

import contextlib
import os
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

_PTS_MAJORS: Final = range(136, 144)  # Unix98 pseudo-terminal slaves
_MAX_PROCESSES: Final = 512  # a terminal with more descendants than this is not walked further


def _read(path: str) -> bytes | None:
    """A small /proc file in one read (raw ``os`` calls: the rescan reads hundreds)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(proc: str, pid: int) -> tuple[bytes, list[bytes]] | None:
    """The command name in /proc/<pid>/stat, and the fields after it (it may hold spaces)."""
    raw = _read(f"{proc}/{pid}/stat")
    if raw is None:
        return None
    end = raw.rfind(b")")
    if end <= 0:
        return None
    return raw[raw.find(b"(") + 1 : end], raw[end + 2 :].split()


def _children(proc: str, pid: int) -> Iterator[int]:
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return
    for task in tasks:
        raw = _read(f"{proc}/{pid}/task/{task}/children")
        if raw:
            with contextlib.suppress(ValueError):
                yield from (int(c) for c in raw.split())


def _descendants(proc: str, root: int) -> list[int]:
    seen: list[int] = []
    todo = [root]
    while todo and len(seen) < _MAX_PROCESSES:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(_children(proc, pid))
    return seen


def _pts(tty_nr: int) -> str | None:
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if major not in _PTS_MAJORS:
        return None
    return f"/dev/pts/{(major - _PTS_MAJORS.start) * 256 + minor}"


def _ttys_of(proc: str, pids: list[int]) -> tuple[set[str], bool]:
    """The pseudo-terminals with a foreground process group, and whether tmux runs there."""
    ttys: set[str] = set()
    tmux = False
    for pid in pids:
        stat = _stat(proc, pid)
        if stat is None or len(stat[1]) < 6:
            continue
        comm, fields = stat
        tty_nr, tpgid = int(fields[4]), int(fields[5])
        path = _pts(tty_nr) if tty_nr and tpgid > 0 else None
        if path is not None:
            ttys.add(path)
        if comm.startswith(b"tmux"):
            tmux = True
    return ttys, tmux


def _tmux_servers(proc: str) -> Iterator[int]:
    """The tmux server processes of this user (their panes' shells are their children).

    Every process's name is read (one small read each); only a tmux one is checked
    further: its owner, and no controlling tty (the server, not a client).
    """
    uid = os.getuid()
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        comm = _read(f"{proc}/{name}/comm")
        if comm is None or not comm.startswith(b"tmux"):
            continue
        stat = _stat(proc, int(name))
        if stat is None or len(stat[1]) < 5 or stat[1][4] != b"0":
            continue  # gone, or it has a controlling tty: a client, not the server
        with contextlib.suppress(OSError):
            if os.stat(f"{proc}/{name}").st_uid == uid:
                yield int(name)


def echo_off(tty: str) -> bool:
    """ECHO off and ICANON on: a program is reading a password from ``tty``."""
    try:
        fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        lflag = termios.tcgetattr(fd)[3]
    except termios.error:
        return False
    finally:
        os.close(fd)
    return not lflag & termios.ECHO and bool(lflag & termios.ICANON)


class EchoOffProbe:
    """Whether the terminal process ``pid`` is showing a password prompt now."""

    def __init__(
        self,
        rescan: float = 2.0,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is read until the first ``password_prompt`` call."""
        self._rescan = rescan
        self._proc = str(proc)
        self._clock = clock
        self._pid = 0
        self._ttys: tuple[str, ...] = ()
        self._scanned = float("-inf")

    def ttys(self, pid: int) -> tuple[str, ...]:
        """The pseudo-terminals of ``pid``'s descendants (and of tmux panes), cached."""
        now = self._clock()
        if pid != self._pid or now - self._scanned >= self._rescan:
            self._pid, self._scanned = pid, now
            ttys, tmux = _ttys_of(self._proc, _descendants(self._proc, pid))
            if tmux:
                for server in _tmux_servers(self._proc):
                    ttys |= _ttys_of(self._proc, _descendants(self._proc, server))[0]
            self._ttys = tuple(sorted(ttys))
        return self._ttys

    def password_prompt(self, pid: int) -> bool:
        """True while any of the terminal's ttys has echo off in canonical mode."""
        if pid <= 0:
            return False
        return any(echo_off(tty) for tty in self.ttys(pid))
