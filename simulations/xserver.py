"""A private X server for end-to-end tests and benchmarks: Xvfb, openbox and xdotool.

``XServer`` starts Xvfb on a free display number (``-displayfd``, no TCP), an
openbox window manager on it, and waits until openbox manages the screen;
``xdotool`` sends real input (XTEST) there. The e2e tests (``tests/e2e/conftest.py``)
and the recorder benchmark (``simulations.benchmarks.recorder``) both use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import TracebackType
from typing import Final

TOOLS: Final = ("Xvfb", "openbox", "xdotool")


def missing_tools() -> list[str]:
    """The tools of ``TOOLS`` not installed here (``make sysdeps`` installs them)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class XServer:
    """Xvfb + openbox on a display of their own, stopped by ``close`` (or ``with``)."""

    def __init__(self, screen: str = "1280x800x24", timeout: float = 10.0) -> None:
        """Start both and wait (up to ``timeout`` seconds) for openbox to manage the screen."""
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not installed: make sysdeps")
        read_fd, write_fd = os.pipe()
        self._xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            self._xvfb.kill()
            raise RuntimeError("Xvfb did not report a display number")
        self.display = f":{number}"
        self.env = {**os.environ, "DISPLAY": self.display}
        self._wm = subprocess.Popen(
            ["openbox", "--sm-disable"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_for_window_manager(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_for_window_manager(self, timeout: float) -> None:
        from Xlib import X, display  # noqa: PLC0415 - needs an X server

        connection = display.Display(self.display)
        try:
            root = connection.screen().root
            check = connection.intern_atom("_NET_SUPPORTING_WM_CHECK")
            deadline = time.monotonic() + timeout
            while root.get_full_property(check, X.AnyPropertyType) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("openbox did not start")
                time.sleep(0.05)
        finally:
            connection.close()

    def xdotool(self, *args: str, timeout: float = 60.0) -> None:
        """Send real X input (XTEST) or act on windows, and wait for xdotool to finish."""
        subprocess.run(["xdotool", *args], env=self.env, check=True, timeout=timeout)

    def activate(self, window_id: str | int) -> None:
        """Bring a window to the front; returns once the window manager says it is active."""
        self.xdotool("windowactivate", "--sync", str(window_id), timeout=30.0)

    def close(self) -> None:
        """Stop openbox and Xvfb."""
        for process in (self._wm, self._xvfb):
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()

    def __enter__(self) -> XServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
