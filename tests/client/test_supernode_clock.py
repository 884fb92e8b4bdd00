import importlib
import inspect
import types

from client.deployment.supernode import (
    ACTIVE_POLL_SECONDS,
    ACTIVE_WINDOW_SECONDS,
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
    now.t += ACTIVE_WINDOW_SECONDS + 1
    assert clock.wait_for(FLOWER_IDLE_SECONDS) == FLOWER_IDLE_SECONDS


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
