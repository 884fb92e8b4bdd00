"""Registering a fleet's keys in one process: Flower's request per key, one outcome each."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import server.node_registration as node_registration
from server.pki import add_device, init_pki


class _FakeControl:
    """The Control API: registers a key once, refuses it the second time."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, str]] = []
        self.closed = False

    def RegisterNode(self, request):
        if any(key == request.public_key for key, _ in self.seen):
            url = "https://127.0.0.1/v1/control/register-node"
            response = httpx.Response(
                409,
                json={"detail": "Public key already in use"},
                request=httpx.Request("POST", url),
            )
            raise httpx.HTTPStatusError("conflict", request=response.request, response=response)
        self.seen.append((request.public_key, request.name))
        return type("Reply", (), {"node_id": len(self.seen)})()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def keys(tmp_path: Path) -> list[Path]:
    pki = init_pki(tmp_path / "pki").root
    return [add_device(pki, name)[1] for name in ("d0", "d1")]


def test_every_key_gets_its_own_outcome_and_a_refusal_does_not_stop_the_rest(keys, monkeypatch):
    control = _FakeControl()
    monkeypatch.setattr(node_registration, "read_superlink_connection", lambda name: name)
    monkeypatch.setattr(node_registration, "init_http_client_from_connection", lambda c: control)
    outcomes = node_registration.register_keys("hearth", [keys[0], keys[0], keys[1]])
    assert [o["name"] for o in outcomes] == ["d0", "d0", "d1"]
    assert [o["success"] for o in outcomes] == [True, False, True]
    assert "already in use" in str(outcomes[1]["error-message"])
    assert [name for _, name in control.seen] == ["d0", "d1"]
    assert control.closed
