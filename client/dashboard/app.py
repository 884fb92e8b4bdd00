"""The dashboard's HTTP surface: the log-in, the page, and the JSON API behind its buttons.

``GET /launch?code=`` trades the launch file's one-time code for the session
cookie; ``GET /`` and ``GET /api/state`` read; every change is a ``POST`` that must
carry the cookie (or the install token in a header), come from the dashboard's own
origin and carry the page's CSRF token. A form post answers with a redirect back
to the page, a JSON post with JSON.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from client.control.consent import on_change
from client.control.device_records import DeviceRecords
from client.control.pause import DurationError, parse_duration
from client.control.recorder_control import (
    ControlResult,
    request_pause,
    request_resume,
    request_revoke,
)
from client.control.sensitive_apps import (
    SensitiveAppError,
    add_app,
    add_site,
    remove_app,
    remove_site,
)
from client.dashboard.auth import (
    COOKIE_NAME,
    CSRF_FIELD,
    CSRF_HEADER,
    Guard,
    Refusal,
)
from client.dashboard.launch import LAUNCH_PATH, Launcher, launch_page
from client.dashboard.page import render_page
from client.dashboard.snapshot import recording_status, snapshot
from client.storage.deletion import delete_vault, purge_revoked_modalities
from client.storage.home import hearth_home

UNTIL_RESUMED: Final = "until-resumed"
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES: Final = 16_384
# Narrowing consent deletes what was recorded of the modalities taken away (as `hearth data`).
on_change(purge_revoked_modalities)


def _headers(nonce: str | None = None) -> dict[str, str]:
    style = f"'nonce-{nonce}'" if nonce else "'none'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src {style}; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


class _Change:
    """One state-changing request: its fields, and how to answer it."""

    def __init__(self, fields: Mapping[str, Any], is_form: bool) -> None:
        self.fields = fields
        self.is_form = is_form

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return None if value is None else str(value)

    def confirmed(self) -> bool:
        value = self.fields.get("confirm")
        return value is True or str(value).lower() in ("yes", "true")

    def answer(self, notice: str, body: Mapping[str, Any]) -> Response:
        if self.is_form:
            return RedirectResponse(f"/?done={notice}", status_code=303, headers=_headers())
        return JSONResponse({"ok": True, **body}, headers=_headers())


async def read_change(request: Request, guard: Guard) -> _Change:
    """The fields of a state-changing request, once it passed the origin and CSRF checks."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: Mapping[str, Any]
    if content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            raise Refusal(400, "the body is not JSON") from None
        fields = data if isinstance(data, dict) else {}
        is_form = False
    elif content_type == _FORM_TYPE:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise Refusal(413, "the form is too large")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        is_form = True
    elif content_type == "":
        fields, is_form = {}, False
    else:
        raise Refusal(415, "send JSON or a form")
    csrf = request.headers.get(CSRF_HEADER) or (
        str(fields[CSRF_FIELD]) if CSRF_FIELD in fields else None
    )
    guard.check_change(request, csrf)
    return _Change(fields, is_form)


def _reading_routes(app: FastAPI, guard: Guard, home: Path) -> None:
    """The page and its state as JSON."""

    @app.get("/", response_class=HTMLResponse)
    def page(done: str | None = None) -> Response:
        nonce = secrets.token_urlsafe(16)
        html = render_page(snapshot(home), guard.csrf_token, nonce, done)
        return HTMLResponse(html, headers=_headers(nonce))

    @app.get("/api/state")
    def state() -> JSONResponse:
        return JSONResponse(snapshot(home), headers=_headers())


def _in_force(result: ControlResult, what: str) -> None:
    """507 when neither the state file nor a running recorder took the change."""
    if not result.in_force:
        raise Refusal(
            507,
            f"the {what} could not be saved ({result.problem}) and no recorder is running; "
            "free some disk space and try again",
        )


def _control_routes(app: FastAPI, guard: Guard, home: Path) -> None:
    """Pause, resume, and the employee's sensitive apps and sites."""

    @app.post("/api/pause")
    async def pause_recording(request: Request) -> Response:
        req = await read_change(request, guard)
        duration = req.text("duration")
        try:
            seconds = (
                None if duration in (None, "", UNTIL_RESUMED) else parse_duration(str(duration))
            )
        except DurationError as exc:
            raise Refusal(400, str(exc)) from None
        _, result = await run_in_threadpool(request_pause, home, seconds)
        _in_force(result, "pause")
        return req.answer(
            "paused",
            {"status": await run_in_threadpool(recording_status), "saved": result.saved},
        )

    @app.post("/api/resume")
    async def resume_recording(request: Request) -> Response:
        req = await read_change(request, guard)
        result = await run_in_threadpool(request_resume, home)
        _in_force(result, "resume")
        return req.answer(
            "resumed",
            {"status": await run_in_threadpool(recording_status), "saved": result.saved},
        )

    _list_routes(
        app,
        guard,
        "/api/sensitive-apps",
        "app",
        (partial(add_app, home), partial(remove_app, home)),
    )
    # Sites: the same checks; the name is never logged (an access log is off, and a
    # refusal does not repeat it), since a site can say something personal.
    _list_routes(
        app,
        guard,
        "/api/sensitive-sites",
        "site",
        (partial(add_site, home), partial(remove_site, home)),
    )


def _list_routes(
    app: FastAPI,
    guard: Guard,
    path: str,
    field: str,
    change: tuple[Callable[[str], tuple[str, ...]], Callable[[str], tuple[str, ...]]],
) -> None:
    """``path`` adds and ``path/remove`` removes one of the employee's own ``field``s."""

    async def _change(
        request: Request, apply: Callable[[str], tuple[str, ...]], done: str
    ) -> Response:
        req = await read_change(request, guard)
        try:
            yours = apply(req.text(field) or "")
        except SensitiveAppError as exc:
            raise Refusal(400, str(exc)) from None
        return req.answer(f"{field}-{done}", {"yours": list(yours)})

    @app.post(path)
    async def add(request: Request) -> Response:
        return await _change(request, change[0], "added")

    @app.post(f"{path}/remove")
    async def remove(request: Request) -> Response:
        return await _change(request, change[1], "removed")


def _leaving_routes(app: FastAPI, guard: Guard, home: Path) -> None:
    """Delete all data, revoke consent."""

    @app.post("/api/data/delete")
    async def delete_data(request: Request) -> Response:
        req = await read_change(request, guard)
        if not req.confirmed():
            raise Refusal(400, "confirm to delete: nothing was deleted")
        existed = await run_in_threadpool(delete_vault, DeviceRecords(home).vault_dir)
        return req.answer("deleted", {"deleted": existed})

    @app.post("/api/consent/revoke")
    async def revoke_consent(request: Request) -> Response:
        req = await read_change(request, guard)
        if not req.confirmed():
            raise Refusal(400, "confirm to revoke: consent is unchanged")
        _, result = await run_in_threadpool(request_revoke, home)
        _in_force(result, "revocation")
        delete = str(req.fields.get("delete_data", "")).lower() in ("yes", "true")
        if delete:
            await run_in_threadpool(delete_vault, DeviceRecords(home).vault_dir)
        return req.answer(
            "revoked", {"status": await run_in_threadpool(recording_status), "deleted": delete}
        )


def _launch_route(app: FastAPI, guard: Guard, launcher: Launcher | None) -> None:
    """The one-time code from the launch file, for the session cookie."""

    @app.get(LAUNCH_PATH, response_class=HTMLResponse)
    def launch(code: str | None = None) -> Response:
        if launcher is None or not launcher.redeem(code):
            raise Refusal(
                403,
                "this launch code was already used: open the launch file hearth printed again",
            )
        # A page, not a 303: the browser came from a file:// page (another site), and a
        # SameSite=Strict cookie is not sent on a redirect chain that started elsewhere.
        # The page's own refresh starts on the dashboard's origin, so the cookie goes.
        headers = {**_headers(), "Referrer-Policy": "no-referrer"}
        response = HTMLResponse(launch_page("/"), headers=headers)
        response.set_cookie(
            COOKIE_NAME,
            guard.session,
            httponly=True,
            samesite="strict",
            secure=False,  # plain HTTP on loopback
            path="/",
        )
        return response


def create_app(guard: Guard, launcher: Launcher | None = None) -> FastAPI:
    """The dashboard of this device (``hearth_home()``), reachable only through ``guard``.

    ``launcher`` holds the launch file's one-time code; without it only the install
    token in a header gets in (scripts, tests).
    """
    app = FastAPI(title="hearth dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Refusal)
    async def refused(_: Request, exc: Refusal) -> Response:
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=_headers())

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            guard.check_host(request)
            if request.url.path != LAUNCH_PATH:
                guard.check_token(request)
        except Refusal as exc:
            return await refused(request, exc)
        return await call_next(request)

    home = hearth_home()
    _launch_route(app, guard, launcher)
    _reading_routes(app, guard, home)
    _control_routes(app, guard, home)
    _leaving_routes(app, guard, home)
    return app
