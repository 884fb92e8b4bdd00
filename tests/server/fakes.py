"""Stand-ins for Flower's client manager and replies, shared by the server tests."""

from __future__ import annotations

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from privacy.policy import demo_policy_text, parse_policy


class Node:
    """A ClientProxy stand-in: the strategy only passes it around."""

    def __init__(self, cid: int) -> None:
        self.cid = str(cid)


class Manager:
    """A ClientManager with ``n`` nodes available."""

    def __init__(self, n: int = 10) -> None:
        self.nodes = {str(i): Node(i) for i in range(n)}

    def num_available(self) -> int:
        return len(self.nodes)

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        return len(self.nodes) >= num_clients

    def all(self):
        return dict(self.nodes)


def small_policy_text() -> str:
    """The policy these tests were written against: cohort 2, no central noise, user target 8.

    The shipped default now targets 10,000 laptops (cohort 800, distributed noise); the
    demo policy keeps the small federation's settings.
    """
    return (
        demo_policy_text()
        .replace("user_delta = 1e-7\n", "")
        .replace("user_epsilon_target = 1.0", "user_epsilon_target = 8.0")
    )


def policy(central_noise: float = 0.0, **replace: str):
    text = small_policy_text().replace(
        "central_noise_multiplier = 0.0", f"central_noise_multiplier = {central_noise}"
    )
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return parse_policy(text)


def reply(arrays, weight: int = 1):
    """A train reply (proxy, FitRes) carrying ``arrays`` with ``weight``."""
    return (Node(-1), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), weight, {}))


def scaled_like(model, norm: float, direction: float = 1.0):
    """An update shaped like ``model`` with L2 norm ``norm`` (all entries equal)."""
    size = sum(a.size for a in model)
    value = direction * norm / np.sqrt(size)
    return [np.full(a.shape, value, dtype=np.float32) for a in model]
