"""A demo reuses a seeded population only until a campaign has charged its devices' ledgers."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from simulations.demo import DemoSettings, seed_or_reuse, spend_population


def test_a_population_a_campaign_spent_is_seeded_again(tmp_path: Path) -> None:
    settings = DemoSettings(root=tmp_path, employees=2, hours=0.05)
    console = Console(record=True)
    seed_or_reuse(settings, console)
    seed_or_reuse(settings, console)
    assert console.export_text(clear=False).count("reusing") == 1  # seeded, not yet spent: reused
    spend_population(tmp_path)
    seed_or_reuse(settings, console)
    assert console.export_text(clear=False).count("reusing") == 1  # spent: seeded afresh
