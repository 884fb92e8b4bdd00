"""The arithmetic of distributed noise, shared by devices (which add it) and the server.

Under the policy's ``distributed_noise`` each device adds a Gaussian share of std
``z x C / sqrt(m)`` to its clipped update (``z``: central noise multiplier, ``C``:
update clip norm, ``m``: ``min_cohort``); any ``m`` shares sum to the central noise
``N(0, (z C)^2)`` the user-level accountant assumes. ``client.learning.distributed_noise``
adds the share; this module says how big it is and what bounds follow from it.
"""

from __future__ import annotations

import math
from typing import Final

from privacy.policy import PrivacyPolicy

# A Gaussian coordinate beyond 10 standard deviations: probability below 1e-22.
TAIL_STDS: Final = 10.0
# Flower's SecAgg+ masks modulo 2**32 (its documented maximum). Quantizing each
# coordinate to 2**20 levels leaves room for 4,096 summed devices without wrap-around.
MODULUS_RANGE: Final = 2**32
QUANTIZATION_RANGE: Final = 2**20
# hearth's SecAgg+ workflow tells each device, at unmask, how many devices are active
# in the whole round (Flower sends only its neighbourhood's lists).
ACTIVE_COUNT_KEY: Final = "hearth.active-count"


def share_std(policy: PrivacyPolicy) -> float:
    """Std of one device's noise share (0 when the server adds the noise, or none)."""
    t = policy.training
    if not t.distributed_noise or t.central_noise_multiplier <= 0:
        return 0.0
    return t.central_noise_multiplier * t.update_clip_norm / math.sqrt(t.min_cohort)


def required_clipping_range(policy: PrivacyPolicy) -> float:
    """The SecAgg+ clipping range a noised coordinate needs (a clipped one is at most C)."""
    return policy.training.update_clip_norm + TAIL_STDS * share_std(policy)


def max_summed_devices(quantization_range: int, modulus_range: int) -> int:
    """How many quantized updates (and their weights) sum without wrapping the modulus."""
    return modulus_range // quantization_range


def noised_norm_bound(policy: PrivacyPolicy, dimension: int, devices: int) -> float:
    """A bound on the norm of ``devices`` clipped, noised updates summed (fails w.p. < 1e-21).

    ``||sum x_i|| <= n C`` and a Gaussian vector of std ``s`` in ``d`` dimensions has
    norm at most ``s (sqrt(d) + t)`` except with probability ``exp(-t^2 / 2)``.
    """
    t = policy.training
    noise = share_std(policy) * math.sqrt(devices) * (math.sqrt(dimension) + TAIL_STDS)
    return devices * t.update_clip_norm + noise


__all__ = [
    "ACTIVE_COUNT_KEY",
    "MODULUS_RANGE",
    "QUANTIZATION_RANGE",
    "TAIL_STDS",
    "max_summed_devices",
    "noised_norm_bound",
    "required_clipping_range",
    "share_std",
]
