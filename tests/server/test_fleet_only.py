"""Only the Fleet API on the laptops' address: the middleware, alone and in Flower's app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from flwr.superlink import extensions
from flwr.superlink.main import create_app

from server import superlink
from server.fleet_only import FleetOnlyMiddleware, is_fleet_path

CONTROL = ("127.0.0.1", 9094)
FLEET_PORT = 9093


async def _reached(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"reached"})


def _status(path: str, server: tuple[str, int] | None, kind: str = "http") -> list[object]:
    sent: list[object] = []

    async def send(message):
        sent.append(message.get("status", message["type"]))

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": kind, "path": path, "server": server}
    asyncio.run(FleetOnlyMiddleware(_reached, CONTROL)(scope, receive, send))
    return sent


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/start-run",
        "/v1/control/list-runs",
        "/v1/runtime/acquire-task",
        "/v1/runtime/pull-task-input",
        "/health",
        "/docs",
        "/openapi.json",
        "/v1/fleet",
        "/v1/fleet/../control/start-run",
        "/v1/fleet//pull-messages",
        "/v1/fleetx/pull-messages",
    ],
)
def test_everything_but_the_fleet_api_is_403_on_the_laptops_address(path):
    assert _status(path, ("127.0.0.1", FLEET_PORT))[0] == 403
    assert _status(path, ("10.0.0.5", FLEET_PORT))[0] == 403


def test_the_fleet_api_is_reachable_on_the_laptops_address():
    assert _status("/v1/fleet/pull-messages", ("0.0.0.0", FLEET_PORT))[0] == 200


def test_every_api_is_reachable_on_the_loopback_control_address():
    for path in ("/v1/control/start-run", "/v1/runtime/acquire-task", "/v1/fleet/get-run"):
        assert _status(path, CONTROL)[0] == 200


def test_it_fails_closed_on_an_unknown_or_lookalike_address():
    assert _status("/v1/control/start-run", None)[0] == 403
    assert _status("/v1/control/start-run", ("127.0.0.2", CONTROL[1]))[0] == 403
    assert _status("/v1/control/start-run", ("127.0.0.1", FLEET_PORT))[0] == 403


def test_websockets_are_closed_on_the_laptops_address():
    assert _status("/v1/fleet/x", ("127.0.0.1", FLEET_PORT), "websocket") == ["websocket.close"]


def test_fleet_paths():
    assert is_fleet_path("/v1/fleet/push-messages")
    assert not is_fleet_path("/v1/fleet/./push-messages")
    assert not is_fleet_path("/v1/control/x")


@pytest.fixture
def flower_app(monkeypatch) -> Iterator[object]:
    monkeypatch.setattr(extensions, "get_middleware", extensions.get_middleware)
    addresses = superlink.Addresses(CONTROL, ("0.0.0.0", FLEET_PORT))
    superlink.install_fleet_only(addresses)
    yield create_app()


def _post(app, url: str) -> int:
    async def call() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.post(url, content=b"")).status_code

    return asyncio.run(call())


def test_flowers_own_superlink_app_is_fleet_only_on_the_laptops_port(flower_app):
    assert flower_app.user_middleware[0].cls is FleetOnlyMiddleware  # outermost
    laptops = f"http://127.0.0.1:{FLEET_PORT}"
    control = f"http://{CONTROL[0]}:{CONTROL[1]}"
    for path in ("/v1/control/list-runs", "/v1/runtime/get-nodes"):
        assert _post(flower_app, laptops + path) == 403
        assert _post(flower_app, control + path) != 403  # Flower's own answer
    assert _post(flower_app, laptops + "/v1/fleet/get-run") != 403
