"""How the browser logs in without the token ever being in a command line or a URL.

``hearth dashboard`` writes a launch file readable only by the employee (0600 in
the runtime directory, as Jupyter does) that redirects to ``/launch?code=...``:
a one-time code the server exchanges for its session cookie, then forgets. The
browser is started on the file's path, so ``ps`` shows a path, never a secret;
the browser's history keeps only a spent code. After each exchange a fresh code
replaces the old one in the file, so opening the file again logs in again.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Final

_log = logging.getLogger(__name__)

LAUNCH_PATH: Final = "/launch"


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


def launch_page(url: str) -> str:
    """A page that sends the browser to ``url`` at once (no script: our CSP forbids it)."""
    target = html.escape(url, quote=True)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer">'
        f'<meta http-equiv="refresh" content="0;url={target}">'
        "<title>hearth dashboard</title></head>"
        f'<body><p>Opening <a href="{target}">the hearth dashboard</a>...</p></body></html>\n'
    )


class Launcher:
    """One live one-time code at a time, and the 0600 file that carries it."""

    def __init__(self, path: Path, origin: str) -> None:
        """Nothing is written until ``issue``."""
        self.path = path
        self.origin = origin
        self._lock = threading.Lock()
        self._live: bytes | None = None

    def issue(self) -> None:
        """Replace the live code by a fresh one and write it to the launch file.

        Raises ``OSError`` when the file cannot be written (a full disk): the new
        code is live anyway, but only a successful write lets anyone use it.
        """
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._live = _digest(code)
        self._write(launch_page(f"{self.origin}{LAUNCH_PATH}?code={code}"))

    def redeem(self, presented: str | None) -> bool:
        """True exactly once for the live code; any other or a reused code is refused."""
        if not presented:
            return False
        with self._lock:
            live = self._live
            if live is None or not hmac.compare_digest(_digest(presented), live):
                return False
            self._live = None
        try:
            self.issue()
        except OSError as exc:  # the code is spent anyway; never log the code
            _log.warning("the dashboard's launch file was not renewed: %s", exc.strerror)
        return True

    def _write(self, text: str) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            tmp.replace(self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Delete the launch file and forget the code (the dashboard is stopping)."""
        with self._lock:
            self._live = None
        self.path.unlink(missing_ok=True)
