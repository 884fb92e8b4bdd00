"""A real `flwr run .` on the local simulation federation: 4 employees, 2 rounds."""

import json

import pytest

from client.device import Device, simulated_device_home
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


def test_sidecar_reports_accuracy_baselines_and_epsilon_with_its_unit(demo_run):
    root, _ = demo_run
    sidecar = json.loads((root / "checkpoints" / "round-0002.json").read_text())
    assert 0 < sidecar["evaluate"]["top1"] <= 1
    assert 0 < sidecar["evaluate"]["baseline_bigram_top1"] <= 1
    assert sidecar["fit"]["epsilon_max"] > 0
    assert sidecar["epsilon_unit"] == "one example on one device"


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


def test_epsilon_grows_from_round_to_round(demo_run):
    root, _ = demo_run
    rows = read_sidecars(root / "checkpoints")
    assert rows[1]["fit"]["epsilon_max"] > rows[0]["fit"]["epsilon_max"]


def test_no_superlink_is_left_running(demo_run):
    root, _ = demo_run
    own = [p for p in _superlink_processes() if any(str(root) in part for part in p.cmdline())]
    assert own == []
