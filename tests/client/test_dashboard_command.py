"""`hearth dashboard`: loopback address, a 0600 launch file, browser unless --no-browser."""

from __future__ import annotations

import re
import socket
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import client.cli.dashboard as dashboard_commands
from client.cli.main import app
from client.dashboard import load_or_create_token
from client.dashboard.snapshot import snapshot
from client.learning.device import Device
from client.storage.deletion import delete_vault
from client.storage.vault import Vault
from privacy.ledger import BudgetRule
from privacy.policy import load_policy


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    monkeypatch.setattr(dashboard_commands, "serve", lambda _app, sock: sockets.append(sock))
    return sockets


@pytest.fixture
def launched(
    monkeypatch: pytest.MonkeyPatch, served: list[socket.socket]
) -> tuple[list[str], list[str]]:
    """What the browser was started on, and what the launch file said at that moment."""
    opened: list[str] = []
    contents: list[str] = []
    started = threading.Event()

    def browser(url: str) -> None:
        opened.append(url)
        contents.append(Path(url.removeprefix("file://")).read_text())
        started.set()

    def serve(_app: object, sock: socket.socket) -> None:
        started.wait(2.0)  # the server runs until the browser was started (or never is)
        served.append(sock)

    monkeypatch.setattr(dashboard_commands.webbrowser, "open", browser)
    monkeypatch.setattr(dashboard_commands, "serve", serve)
    return opened, contents


def test_the_browser_starts_on_an_owner_only_launch_file_never_on_the_token(
    hearth_home: Path,
    served: list[socket.socket],
    launched: tuple[list[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files: list[Path] = []
    original = dashboard_commands.Launcher.issue

    def issue(self: dashboard_commands.Launcher) -> None:
        original(self)
        files.append(self.path)
        assert stat.S_IMODE(self.path.stat().st_mode) == 0o600

    monkeypatch.setattr(dashboard_commands.Launcher, "issue", issue)
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 0, result.output
    token = load_or_create_token(hearth_home)
    assert token not in result.output
    match = re.search(r"hearth dashboard: http://127\.0\.0\.1:(\d+)/\n", result.output)
    assert match, result.output
    host, port = served[0].getsockname()
    assert (host, str(port)) == ("127.0.0.1", match.group(1))
    opened, contents = launched
    assert opened == [files[0].as_uri()] and files[0].as_uri() in result.output
    assert files[0].parent == hearth_home / "run"
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    assert f"http://127.0.0.1:{port}/launch?code=" in contents[0] and token not in contents[0]
    assert not files[0].exists()  # removed when the dashboard stops
    served[0].close()


def test_no_browser_only_prints(
    served: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(dashboard_commands.webbrowser, "open", opened.append)
    result = CliRunner().invoke(app, ["dashboard", "--no-browser"])
    assert result.exit_code == 0
    assert "Log in by opening file://" in result.output
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
