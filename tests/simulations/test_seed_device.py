"""`hearth-sim seed-device`: synthetic work for a test laptop, never mixed into a recording."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from client.cli.main import app as hearth
from client.storage.vault import Vault
from policy.events import PointerMove
from simulations.population import SeedError, seed_device


def test_a_seeded_laptop_says_its_data_is_synthetic(hearth_home):
    count = seed_device(hearth_home, employee=1, hours=0.1)

    table = CliRunner().invoke(hearth, ["data", "summary"]).output
    as_json = json.loads(CliRunner().invoke(hearth, ["data", "summary", "--json"]).output)

    assert table.startswith("SYNTHETIC DATA")
    assert as_json["synthetic"]["employee"] == 1
    assert as_json["synthetic"]["events"] == count == sum(d["events"] for d in as_json["days"])


def test_a_real_recording_never_receives_synthetic_events(hearth_home):
    with Vault.open(hearth_home / "vault") as vault:
        vault.append([PointerMove(1, 1.0, 10.0, 10.0)])
    with pytest.raises(SeedError, match="not synthetic"):
        seed_device(hearth_home, hours=0.1)
    summary = json.loads(CliRunner().invoke(hearth, ["data", "summary", "--json"]).output)
    assert summary["synthetic"] is None
    assert sum(d["events"] for d in summary["days"]) == 1
