"""A real `flwr run .` on the local simulation federation: 4 employees, 2 rounds."""

import json

import pytest

from client.learning.device import Device, simulated_device_home
from policy.model_version import model_version
from server.checkpoints import load_checkpoint, read_sidecars
from simulations.demo import DemoSettings, run_demo
from simulations.flwr_runner import _superlink_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    result = run_demo(DemoSettings(root=root, employees=4, rounds=2, hours=2.0))
    return root, result


def test_two_rounds_with_four_clients_finish_and_checkpoint_each_round(demo_run):
    root, result = demo_run
    assert result.run.returncode == 0, result.run.log_file.read_text()[-3000:]
    assert [r["round"] for r in read_sidecars(root / "checkpoints")] == [1, 2]
    weights = load_checkpoint(root / "checkpoints" / "round-0002.npz")
    assert "tokens.weight" in weights


def test_sidecar_reports_noised_accuracy_and_the_cap_with_its_unit(demo_run):
    root, _ = demo_run
    sidecar = json.loads((root / "checkpoints" / "round-0002.json").read_text())
    assert 0 <= sidecar["evaluate"]["top1"] <= 1  # a ratio of noised sums, clamped
    assert sidecar["fit"]["clients_trained"] == 4
    assert sidecar["epsilon_example_cap"] == 10.0
    assert sidecar["epsilon_unit"] == "one example on one device"


def test_the_simulation_knows_the_exact_figures_the_server_never_sees(demo_run):
    _, result = demo_run
    truth = result.truth
    assert truth is not None
    assert 0 < truth.top1 <= 1 and 0 < truth.bigram_top1 <= 1
    assert 0 < truth.epsilon_max <= 10.0


def test_every_device_logged_exactly_what_it_uploaded(demo_run):
    root, _ = demo_run
    for employee in range(4):
        uploads = Device(simulated_device_home(root, employee)).uploads()
        assert [u["round"] for u in uploads] == [1, 2]
        assert all(u["bytes"] > 0 and u["arrays"] for u in uploads)


def test_each_device_trained_from_the_model_the_server_checkpointed(demo_run):
    root, _ = demo_run
    first = read_sidecars(root / "checkpoints")[0]
    saved = load_checkpoint(root / "checkpoints" / "round-0001.npz")
    assert first["model_version"] == model_version(saved.values())
    for employee in range(4):
        uploads = Device(simulated_device_home(root, employee)).uploads()
        assert uploads[0]["model_version"] != first["model_version"]  # the initial model
        assert uploads[1]["model_version"] == first["model_version"]


def test_each_device_charged_two_rounds_and_two_evaluations_to_its_ledger(demo_run):
    root, _ = demo_run
    passphrase = (root / "synthetic.passphrase").read_text().strip()
    for employee in range(4):
        ledger = Device(simulated_device_home(root, employee), passphrase).ledger()
        spent = [e.epsilon_after for e in ledger.entries]
        assert len(spent) == 4 and spent == sorted(spent)


def test_no_superlink_is_left_running(demo_run):
    root, _ = demo_run
    own = [p for p in _superlink_processes() if any(str(root) in part for part in p.cmdline())]
    assert own == []
