"""Only the Fleet API on the laptops' address; Control and Runtime on loopback only.

Flower 1.41 serves its Fleet (``/v1/fleet/*``, SuperNodes), Control
(``/v1/control/*``, ``flwr run``) and Runtime (``/v1/runtime/*``, SuperExec and
ServerApps) APIs from one FastAPI app, and its Control API authenticates no one
without Flower's enterprise plugin: whoever reaches it can submit a run. hearth
serves that one app on two sockets (``server.superlink``): the laptops' address,
where this middleware lets through nothing but ``/v1/fleet/*``, and a loopback
address with everything, for the ML team's ``flwr run`` and Flower's own SuperExec.

The middleware decides by the local address a connection arrived on (ASGI
``scope["server"]``), not by anything the client sends, and fails closed: only a
request that arrived on exactly the control address may leave the Fleet API.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

FLEET_PREFIX: Final = "/v1/fleet/"
REFUSAL: Final = b"hearth: only the Fleet API (/v1/fleet/*) is served on this address\n"


def is_fleet_path(path: str) -> bool:
    """Whether ``path`` is a plain Fleet API path (no ``..``, ``.`` or empty segment)."""
    if not path.startswith(FLEET_PREFIX):
        return False
    segments = path[len(FLEET_PREFIX) :].split("/")
    return all(segment not in {"", ".", ".."} for segment in segments)


class FleetOnlyMiddleware:
    """Refuse (403) every request but the Fleet API's unless it came in on ``control``.

    Parameters
    ----------
    app
        The SuperLink's ASGI app.
    control
        ``(host, port)`` of the loopback socket that serves every API.

    """

    def __init__(self, app: ASGIApp, control: tuple[str, int]) -> None:
        self.app = app
        self.control = control

    def allows(self, scope: Scope) -> bool:
        """Whether this request may reach the app."""
        server = scope.get("server")
        if server is not None and (str(server[0]), int(server[1])) == self.control:
            return True
        return scope["type"] == "http" and is_fleet_path(str(scope.get("path", "")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 403 without reaching Flower."""
        if scope["type"] == "lifespan" or self.allows(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(REFUSAL)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": REFUSAL})


__all__ = ["FLEET_PREFIX", "FleetOnlyMiddleware", "is_fleet_path"]
