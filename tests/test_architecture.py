"""The package map holds: imports flow one way, nothing loose in client/ (tests/architecture.py)."""

from __future__ import annotations

from pathlib import Path

from tests.architecture import ROOT, check, render


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_hearths_imports_flow_the_way_the_package_map_says():
    report = check(ROOT)
    assert report.arrows == [], render(report)
    assert report.loose == [], render(report)
    # The graph is real: the ClientApp reads storage/, the CLI reaches every package.
    assert report.edges["client/learning", "client/storage"] > 0
    assert report.edges["client/cli", "client/dashboard"] > 0


def test_the_check_catches_a_forbidden_arrow_a_loose_module_and_a_long_one(tmp_path):
    for package in ("client", "client/storage", "client/control", "client/learning", "server"):
        _write(tmp_path, f"{package}/__init__.py")
    # storage is the bottom: even a type-only import of control/ is an arrow upwards.
    _write(
        tmp_path,
        "client/storage/vault.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from client.control.consent import ConsentRecord\n",
    )
    _write(tmp_path, "client/control/consent.py", "def f():\n    from client import learning\n")
    _write(tmp_path, "client/learning/app.py", "import server.app\n" + "x = 1\n" * 401)
    _write(tmp_path, "client/helpers.py")
    _write(tmp_path, "server/app.py", "from client.storage import vault\n")
    report = check(tmp_path)
    assert report.arrows == [
        "client/control/consent.py:2: imports client.learning: "
        "client/control/ may import only storage",
        "client/learning/app.py:1: imports server.app: client/ never imports server/",
        "client/storage/vault.py:3: imports client.control.consent: "
        "client/storage/ may import only nothing else in client/",
        "server/app.py:1: imports client.storage.vault: server/ never imports client/",
    ]
    assert report.loose == [
        "client/helpers.py: not in a client package "
        "(cli, dashboard, recording, learning, deployment, control, storage)"
    ]
    assert report.oversized == ["client/learning/app.py: 402 lines (at most 400)"]
