"""Who may use the dashboard: the per-install token, the session cookie, and the CSRF checks.

The dashboard listens on 127.0.0.1 only, but any local process or any web page
the employee visits can reach loopback. So every request needs either the
session cookie (HttpOnly, SameSite=Strict, random per dashboard process, given
only in exchange for a one-time launch code: ``client.dashboard.launch``) or, for
scripts, the per-install token in a header (read from its 0600 file). The token
is never accepted in a URL. Every state-changing request must also come from the
dashboard's own origin and carry the CSRF token embedded in the page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

TOKEN_FILE: Final = "dashboard.token"  # noqa: S105
COOKIE_NAME: Final = "hearth_dashboard"
TOKEN_HEADER: Final = "x-hearth-token"  # noqa: S105
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf"
_CSRF_INFO: Final = b"hearth-dashboard-csrf-v1"
_ALLOWED_FETCH_SITES: Final = frozenset({"same-origin", "none"})


def token_path(home: Path) -> Path:
    """Where the per-install token lives (owner-only)."""
    return home / TOKEN_FILE


def load_or_create_token(home: Path) -> str:
    """The per-install token: created once, random, stored 0600 under ``home``."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = token_path(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
        # A damaged or truncated file: replace it with a fresh token.
        path.unlink()
        return load_or_create_token(home)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
        handle.flush()
        os.fsync(handle.fileno())
    return token


def csrf_token_for(token: str) -> str:
    """The CSRF token embedded in the page, derived from the install token."""
    return hmac.new(token.encode(), _CSRF_INFO, hashlib.sha256).hexdigest()


class Refusal(Exception):
    """A request is refused; ``status`` is the HTTP status, ``reason`` is safe to show."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Guard:
    """The checks every request passes, for one dashboard at one origin."""

    token: str
    origin: str  # e.g. "http://127.0.0.1:8123"
    # What the cookie carries: random per dashboard process, never the install token.
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    @property
    def csrf_token(self) -> str:
        """The CSRF token the page carries."""
        return csrf_token_for(self.token)

    @property
    def host(self) -> str:
        """The Host header the dashboard answers to (a DNS-rebinding defence)."""
        return urlsplit(self.origin).netloc

    def check_host(self, request: Request) -> None:
        """Refuse a request whose Host is not the dashboard's own."""
        if request.headers.get("host", "") != self.host:
            raise Refusal(400, "unknown host: open the dashboard at the address it printed")

    def presented_token(self, request: Request) -> str | None:
        """The install token from a header (``Authorization: Bearer`` or ``X-Hearth-Token``)."""
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        return request.headers.get(TOKEN_HEADER)

    def token_matches(self, presented: str | None) -> bool:
        """Constant-time comparison with the install token."""
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.token.encode()
        )

    def session_matches(self, presented: str | None) -> bool:
        """Constant-time comparison with this process's session cookie."""
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.session.encode()
        )

    def check_token(self, request: Request) -> None:
        """401 unless the request carries the session cookie or the install token."""
        if self.session_matches(request.cookies.get(COOKIE_NAME)):
            return
        if not self.token_matches(self.presented_token(request)):
            raise Refusal(
                401, "this dashboard needs you to log in: open the launch file hearth printed"
            )

    def check_same_origin(self, request: Request) -> None:
        """403 when the browser says the request comes from another site."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in _ALLOWED_FETCH_SITES:
            raise Refusal(403, "refused: the request came from another site")
        origin = request.headers.get("origin")
        if origin is not None and origin != self.origin:
            raise Refusal(403, "refused: the request came from another origin")
        referer = request.headers.get("referer")
        if referer is not None:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                raise Refusal(403, "refused: the request came from another page")

    def check_csrf(self, presented: str | None) -> None:
        """403 unless the CSRF token of the page came with the request."""
        if presented is None or not hmac.compare_digest(
            presented.encode(), self.csrf_token.encode()
        ):
            raise Refusal(403, "refused: the page's CSRF token is missing; reload the dashboard")

    def check_change(self, request: Request, csrf: str | None) -> None:
        """Everything a state-changing request must pass (token checked before)."""
        self.check_same_origin(request)
        self.check_csrf(csrf)
