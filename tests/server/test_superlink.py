"""The SuperLink launcher: Flower's SQLite state waits out a lock longer than 5 s."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flwr.supercore import sql_mixin
from flwr.supercore.object_store.sql_object_store import SqlObjectStore
from sqlalchemy.exc import OperationalError

from server import superlink

HELD = 6.5  # seconds another writer holds the lock: past Flower's own 5 s busy timeout


@pytest.fixture
def restore_pragmas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_mixin, "SQLITE_PRAGMAS", sql_mixin.SQLITE_PRAGMAS)


def _store(path: Path) -> SqlObjectStore:
    store = SqlObjectStore(str(path))
    store.initialize()
    return store


def _hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def _write_while_locked(store: SqlObjectStore, path: Path) -> float:
    locked = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, HELD, locked))
    holder.start()
    locked.wait()
    started = time.monotonic()
    try:
        store.clear()  # a write: waits for the lock or fails with "database is locked"
    finally:
        holder.join()
    return time.monotonic() - started


def test_every_connection_gets_the_longer_busy_timeout(tmp_path, restore_pragmas):
    superlink.raise_busy_timeout()
    store = _store(tmp_path / "state.db")
    (row,) = store.query("PRAGMA busy_timeout")
    assert row == {"timeout": superlink.BUSY_TIMEOUT_MS}
    (row,) = store.query("PRAGMA journal_mode")
    assert row == {"journal_mode": "wal"}  # Flower's other settings are kept


def test_a_write_waits_out_a_lock_that_flowers_own_timeout_gives_up_on(tmp_path, restore_pragmas):
    flower_default = _store(tmp_path / "default.db")
    with pytest.raises(OperationalError, match="database is locked"):
        _write_while_locked(flower_default, tmp_path / "default.db")

    superlink.raise_busy_timeout()
    hearth = _store(tmp_path / "hearth.db")
    waited = _write_while_locked(hearth, tmp_path / "hearth.db")
    assert waited >= HELD - 1.0


def test_a_flower_without_the_setting_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(sql_mixin, "SQLITE_PRAGMAS", (("journal_mode", "WAL"),))
    with pytest.raises(superlink.SuperLinkLaunchError, match="busy_timeout"):
        superlink.raise_busy_timeout()


def test_the_launcher_is_flower_superlink_with_its_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "server.superlink", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "usage: flower-superlink" in result.stdout
    assert "--enable-supernode-auth" in result.stdout


def test_the_laptops_fleet_address_is_split_from_flowers_arguments():
    addresses, rest = superlink.split_arguments(
        ["--fleet-host", "0.0.0.0", "--fleet-port", "9093", "--host", "127.0.0.1", "--port", "9094"]
    )
    assert addresses.control == ("127.0.0.1", 9094)
    assert addresses.fleet == ("0.0.0.0", 9093)
    assert rest == ["--host", "127.0.0.1", "--port", "9094"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--host", "127.0.0.1", "--port", "9094"], "--fleet-host and --fleet-port are required"),
        (
            ["--fleet-host", "0.0.0.0", "--fleet-port", "9093", "--host", "0.0.0.0"],
            "--host must be 127.0.0.1",
        ),
        (
            ["--fleet-host", "10.0.0.5", "--fleet-port", "9094", "--port", "9094"],
            "must differ",
        ),
    ],
)
def test_control_is_never_served_beyond_loopback(argv, says):
    with pytest.raises(superlink.SuperLinkLaunchError, match=says):
        superlink.split_arguments(argv)


def test_the_launcher_refuses_to_start_without_a_fleet_address_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "server.superlink", "--host", "127.0.0.1", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "--fleet-host and --fleet-port are required" in result.stderr
