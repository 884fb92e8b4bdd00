"""A simulation trains its devices on their one thread, then gives the process its own back."""

from __future__ import annotations

import pytest
import torch

from client.learning.threads import TRAINING_THREADS, training_threads


def test_a_block_runs_on_the_devices_threads_and_the_process_gets_its_own_back() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS + 1)
    try:
        with training_threads():
            assert torch.get_num_threads() == TRAINING_THREADS
        assert torch.get_num_threads() == TRAINING_THREADS + 1
        with pytest.raises(RuntimeError), training_threads():
            raise RuntimeError("a device's round failed")
        assert torch.get_num_threads() == TRAINING_THREADS + 1
    finally:
        torch.set_num_threads(before)
