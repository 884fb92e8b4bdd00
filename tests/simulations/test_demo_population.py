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


def test_the_demo_runs_64_wide_under_its_policy_and_the_company_width_under_the_default() -> None:
    small = DemoSettings(root=Path("unused"), employees=20)
    config, why = small.model()
    assert config == {"hidden-width": 64} and "no user-level noise" in why
    company = DemoSettings(root=Path("unused"), employees=10_000, per_round=1000)
    assert company.model()[0] == {}  # the run config's default, hidden-width 32
    assert "hidden width 32" in company.model()[1]
    asked = DemoSettings(root=Path("unused"), employees=20, extra_config=(("hidden-width", 16),))
    assert asked.model() == ({}, "hidden width 16 (run config override)")
