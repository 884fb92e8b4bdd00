"""Shared fixtures: every test gets its own HEARTH_HOME and passphrase."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def hearth_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "hearth-home"
    monkeypatch.setenv("HEARTH_HOME", str(home))
    monkeypatch.setenv("HEARTH_PASSPHRASE", "correct horse battery staple")
    monkeypatch.setenv("HEARTH_ORG_KEY_PASSPHRASE", "org key test passphrase")  # encrypted org key
    monkeypatch.setenv("HEARTH_KEYRING", "0")  # hermetic: never touch a real OS keyring
    yield home
