"""Per-device set-up is paid once per device per simulation, with the vault format unchanged."""

from pathlib import Path

import numpy as np
import pytest

from client.learning import device_cache
from client.learning.device import SIM_PASSPHRASE_FILE, Device, simulated_device_home
from client.learning.featurize import featurize
from client.storage import keys
from client.storage.vault import Vault
from simulations.population import seed_population


@pytest.fixture
def population(tmp_path: Path) -> Path:
    device_cache.clear()
    seed_population(tmp_path, 3, seed=7, hours=1.0)
    yield tmp_path
    device_cache.clear()


def _device(root: Path, i: int) -> Device:
    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    return Device(simulated_device_home(root, i), passphrase, simulated=True)


def test_seeded_vaults_open_with_the_ordinary_passphrase_unwrap(population: Path) -> None:
    passphrase = (population / SIM_PASSPHRASE_FILE).read_text().strip()
    with Vault.open(simulated_device_home(population, 1) / "vault", passphrase) as vault:
        events = list(vault.iter_events())
    assert events and not vault.corrupt_segments
    assert np.array_equal(_device(population, 1).examples(8).context, featurize(events, 8).context)


def test_one_scrypt_derivation_serves_every_device_and_every_round(
    population: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = keys._kek_from_passphrase
    monkeypatch.setattr(keys, "_kek_from_passphrase", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):  # rounds
        for i in range(3):
            device = _device(population, i)
            assert len(device.examples(8)) > 0
            device.ledger().history()
    assert len(calls) == 1


def test_a_changed_vault_is_featurized_again(population: Path) -> None:
    device = _device(population, 0)
    before = len(device.examples(8))
    with Vault(device.vault_dir, device_cache.data_key(device.vault_dir, device.passphrase)) as v:
        events = list(v.iter_events())
        v.append(events[:200])
        expected = len(featurize([*events, *events[:200]], 8))
    assert len(device.examples(8)) == expected > before
