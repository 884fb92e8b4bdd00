"""The fleet's cap on concurrent tasks: a slot is held by the task process until it exits."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.deployment import runner
from client.deployment.task_slots import (
    ENV_TASK_SLOTS,
    make_slots,
    slots_directory,
    try_acquire,
)
from client.deployment.zygote_client import ENV_ZYGOTE, start_process

SLEEP = "import time; time.sleep(60)"


def free_within(directory: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        slot = try_acquire(directory)
        if slot is not None:
            slot.close()
            return True
        time.sleep(0.02)
    return False


def test_no_more_slots_than_made_and_a_closed_one_is_free_again(tmp_path: Path) -> None:
    directory = make_slots(tmp_path / "slots", 2)
    first, second = try_acquire(directory), try_acquire(directory)
    assert first is not None and second is not None
    assert try_acquire(directory) is None
    first.close()
    again = try_acquire(directory)
    assert again is not None
    again.close()
    second.close()


def test_a_task_started_with_its_slot_holds_it_until_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_ZYGOTE, raising=False)  # a fresh process, as on a laptop
    directory = make_slots(tmp_path / "slots", 1)
    slot = try_acquire(directory)
    assert slot is not None
    child = start_process([sys.executable, "-c", SLEEP], keep=(slot.fd,))
    slot.close()  # the executor's copy: the task's keeps the lock
    assert not free_within(directory, 0.5)
    child.terminate()
    child.wait(10)
    assert free_within(directory, 5)


class _NoTasks:
    """A Runtime API that counts claims and has nothing to hand out."""

    def __init__(self) -> None:
        self.claims = 0

    def AcquireTask(self, request: Any) -> Any:
        self.claims += 1
        return type("Reply", (), {"HasField": lambda self, name: False, "token": ""})()

    def close(self) -> None:
        """Nothing to close."""


@pytest.fixture(name="no_tasks")
def _no_tasks(monkeypatch: pytest.MonkeyPatch) -> Iterator[_NoTasks]:
    api = _NoTasks()
    monkeypatch.setattr(runner, "_runtime_client", lambda *_: api)
    yield api


def _serve_briefly(seconds: float) -> None:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    runner.serve("127.0.0.1:1", stop)


def test_the_executor_claims_no_task_while_every_slot_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tasks: _NoTasks
) -> None:
    directory = make_slots(tmp_path / "slots", 1)
    monkeypatch.setenv(ENV_TASK_SLOTS, str(directory))
    held = try_acquire(directory)
    assert held is not None
    _serve_briefly(0.6)
    assert no_tasks.claims == 0
    held.close()
    _serve_briefly(0.6)
    assert no_tasks.claims >= 1
    assert free_within(directory, 1)  # a claim that found nothing gave its slot back


def test_without_the_variable_there_is_no_cap_and_an_empty_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_TASK_SLOTS, raising=False)
    assert slots_directory() is None
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(ENV_TASK_SLOTS, str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="holds no slot-"):
        slots_directory()
