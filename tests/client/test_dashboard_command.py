"""`hearth dashboard`: one token per install, loopback address, browser unless --no-browser."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client import dashboard_commands
from client.cli import app
from client.dashboard import load_or_create_token
from client.dashboard.snapshot import snapshot
from client.data_commands import delete_vault
from client.device import Device
from client.vault import Vault
from privacy.ledger import BudgetRule
from privacy.policy import load_policy


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    monkeypatch.setattr(dashboard_commands, "serve", lambda _app, sock: sockets.append(sock))
    return sockets


def test_the_command_prints_a_loopback_address_with_the_install_token(
    hearth_home: Path, served: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(dashboard_commands.webbrowser, "open", opened.append)
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 0, result.output
    match = re.search(r"hearth dashboard: (http://127\.0\.0\.1:(\d+)/\?token=(\S+))", result.output)
    assert match
    assert match.group(3) == load_or_create_token(hearth_home)
    assert opened == [match.group(1)]
    host, port = served[0].getsockname()
    assert (host, str(port)) == ("127.0.0.1", match.group(2))
    served[0].close()


def test_no_browser_only_prints(
    served: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(dashboard_commands.webbrowser, "open", opened.append)
    assert CliRunner().invoke(app, ["dashboard", "--no-browser"]).exit_code == 0
    assert opened == []
    served[0].close()


def test_a_busy_port_is_one_clear_line(served: list[socket.socket]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["dashboard", "--no-browser", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert served == []


def test_a_device_that_never_trained_shows_nothing_spent_per_example_or_action(
    hearth_home: Path,
) -> None:
    budget = snapshot(hearth_home)["budget"]
    assert (budget["epsilon_spent"], budget["epsilon_per_action"], budget["entries"]) == (0, 0, 0)
    assert not (Device(hearth_home).privacy_dir).exists()


def test_after_deletion_the_budget_still_shows_what_was_spent(hearth_home: Path) -> None:
    device = Device(hearth_home)
    with Vault.open(device.vault_dir):
        pass
    rule = BudgetRule.from_policy(load_policy())
    device.ledger().record(1, (1.0, 0.1, 10), rule, "0" * 64)
    spent = device.ledger().spent(rule)
    delete_vault(device.vault_dir)
    budget = snapshot(hearth_home)["budget"]
    assert budget["error"] is None
    assert budget["epsilon_spent"] == pytest.approx(spent) and spent > 0
    assert budget["epsilon_per_action"] > budget["epsilon_spent"]
    assert not device.vault_dir.exists()
