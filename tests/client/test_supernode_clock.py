import importlib
import inspect
import types

import pytest

from client.deployment.patience import next_wait
from client.deployment.supernode import (
    ACTIVE_POLL_SECONDS,
    FLOWER_IDLE_SECONDS,
    SUPERNODE_LOOP,
    RoundAwareClock,
    install,
)


class FakeNow:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_idle_supernode_keeps_flowers_three_second_wait() -> None:
    clock = RoundAwareClock(FakeNow())
    assert clock.wait_for(FLOWER_IDLE_SECONDS) == FLOWER_IDLE_SECONDS


def test_during_a_round_the_idle_wait_is_short_then_returns_to_flowers() -> None:
    now = FakeNow()
    clock = RoundAwareClock(now)
    clock.message_arrived()
    assert clock.wait_for(FLOWER_IDLE_SECONDS) == ACTIVE_POLL_SECONDS
    assert clock.wait_for(0.5) == 0.5  # other waits are Flower's own
    now.t += 121.0  # a round long over
    assert clock.wait_for(FLOWER_IDLE_SECONDS) == FLOWER_IDLE_SECONDS


def test_a_supernode_waiting_long_in_a_round_polls_less_often() -> None:
    # 100 SuperNodes polling every 0.3 s while the server waited for the slowest device
    # starved the devices' own training of CPU: the wait grows with the time waited.
    now = FakeNow()
    clock = RoundAwareClock(now)
    clock.message_arrived()
    now.t += 10.0
    assert clock.wait_for(FLOWER_IDLE_SECONDS) == pytest.approx(1.0)
    now.t += 50.0
    assert clock.wait_for(FLOWER_IDLE_SECONDS) == FLOWER_IDLE_SECONDS  # never above Flower's


def test_the_next_poll_waits_a_tenth_of_the_wait_within_bounds() -> None:
    assert next_wait(0.0, 0.2, 2.0) == 0.2
    assert next_wait(5.0, 0.2, 2.0) == pytest.approx(0.5)
    assert next_wait(3600.0, 0.2, 2.0) == 2.0
    with pytest.raises(ValueError, match="shortest <= longest"):
        next_wait(1.0, 2.0, 1.0)


def test_install_notes_each_pulled_message_and_replaces_time_in_the_loop() -> None:
    replies = [None, 7]
    module = types.SimpleNamespace(time=None, _pull_and_store_message=lambda: replies.pop(0))
    now = FakeNow()
    clock = RoundAwareClock(now)
    install(module, clock)
    assert module.time is clock
    assert module._pull_and_store_message() is None
    assert clock.last_message == float("-inf")
    assert module._pull_and_store_message() == 7
    assert clock.last_message == now.t


def test_the_pinned_flower_loop_still_has_the_patched_names_and_the_three_second_nap() -> None:
    loop = importlib.import_module(SUPERNODE_LOOP)
    source = inspect.getsource(loop.start_client_internal)
    assert "time.sleep(3)" in source
    assert "_pull_and_store_message(" in source
    assert callable(loop._pull_and_store_message)
