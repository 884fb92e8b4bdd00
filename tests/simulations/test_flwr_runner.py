"""How ``flwr run`` is started: how many ClientApp actors the simulation engine gets."""

import subprocess

import pytest

from simulations import flwr_runner


class _Finished:
    """A ``flwr run`` that has already exited."""

    returncode = 0

    def poll(self):
        return 0

    def wait(self):
        return 0

    def kill(self):
        raise AssertionError("a finished run is not killed")


@pytest.fixture
def started(monkeypatch):
    """The command and environment each ``run_app`` starts, without starting it."""
    calls = []

    def fake_popen(command, env, **_):
        calls.append((command, env))
        return _Finished()

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.setattr(flwr_runner, "stop_local_superlink", lambda port: None)
    return calls


def _federation(command):
    return command[command.index("--federation-config") + 1].split()


def _run(tmp_path, **kwargs):
    return flwr_runner.run_app(
        num_supernodes=10,
        run_config={},
        flwr_home=tmp_path / "flwr-home",
        log_file=tmp_path / "flwr.log",
        **kwargs,
    )


def test_a_local_run_gets_an_actor_a_cpu_and_a_spare(started, tmp_path, monkeypatch):
    monkeypatch.setattr(flwr_runner.os, "cpu_count", lambda: 2)
    _run(tmp_path)
    ((command, _),) = started
    federation = _federation(command)
    assert "client-resources-num-cpus=1" in federation
    assert "init-args-num-cpus=3" in federation  # 2 CPUs, one actor each, one spare


def test_the_actor_count_can_be_chosen(started, tmp_path):
    _run(tmp_path, actors=5)
    ((command, _),) = started
    assert "init-args-num-cpus=5" in _federation(command)


def test_on_a_ray_cluster_ray_counts_the_cpus_itself(started, tmp_path):
    # ray.init() refuses num_cpus when it joins a running cluster.
    _run(tmp_path, ray_address="127.0.0.1:6379", actors=5)
    ((command, env),) = started
    assert not any(part.startswith("init-args-num-cpus") for part in _federation(command))
    assert env["RAY_ADDRESS"] == "127.0.0.1:6379"
